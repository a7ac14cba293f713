// Status propagation macros shared by every paramd library.
//
// Debian 12's abseil (20220623) has no status macros of its own, so paramd defines the two
// it needs here and nowhere else.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PARAMD_STATUS_CONCAT_INNER_(a, b) a##b
#define PARAMD_STATUS_CONCAT_(a, b) PARAMD_STATUS_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define PARAMD_RETURN_IF_ERROR(expr)                  \
  do {                                                \
    ::absl::Status paramd_status_ = (expr);           \
    if (!paramd_status_.ok()) return paramd_status_;  \
  } while (false)

// `PARAMD_ASSIGN_OR_RETURN(auto x, MakeX());` declares or assigns `x` from a StatusOr, or
// returns its status from the enclosing function.
#define PARAMD_ASSIGN_OR_RETURN(lhs, expr) \
  PARAMD_ASSIGN_OR_RETURN_IMPL_(PARAMD_STATUS_CONCAT_(paramd_statusor_, __LINE__), lhs, expr)

#define PARAMD_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()
