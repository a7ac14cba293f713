// Compile-time checks that a service's list of raw methods (those whose messages travel as
// grpc::ByteBuffer, which the call observer must not read as their generated types) matches
// the raw callback methods the service derives from.
#pragma once

#include <type_traits>

namespace paramd::service {

// Whether `Service` derives from `RawMethod<...>` (a generated WithRawCallbackMethod_M).
template <class Service, template <class> class RawMethod>
struct IsRawMethod {
  template <class Base>
  static std::true_type Test(const RawMethod<Base>*);
  static std::false_type Test(const void*);
  static constexpr bool value = decltype(Test(static_cast<const Service*>(nullptr)))::value;
};

}  // namespace paramd::service
