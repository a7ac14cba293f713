// Expected strings are what PyTorch 2.x prints for `repr(t)` (torch/_tensor_str.py with
// the default print options) for the same dtype, shape and values.
#include "client/cli/tensor_format.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "paramd/tensor.h"
#include "base/half.h"

namespace paramd::cli {
namespace {

using paramd::client::DType;
using paramd::client::HostTensor;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename T>
void Append(std::string* out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // the test hosts are little-endian, as the wire
  out->append(bytes, sizeof(T));
}

// A tensor of `dtype` and `shape` holding `values` (converted as a cast would).
HostTensor Make(DType dtype, std::vector<int64_t> shape, const std::vector<double>& values) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  for (double v : values) {
    switch (dtype) {
      case DType::kFloat32:
        Append(&t.data, static_cast<float>(v));
        break;
      case DType::kFloat64:
        Append(&t.data, v);
        break;
      case DType::kFloat16:
        Append(&t.data, FloatToHalfBits(static_cast<float>(v)));
        break;
      case DType::kBFloat16:
        Append(&t.data, FloatToBFloat16Bits(static_cast<float>(v)));
        break;
      case DType::kInt64:
        Append(&t.data, static_cast<int64_t>(v));
        break;
      case DType::kInt32:
        Append(&t.data, static_cast<int32_t>(v));
        break;
      case DType::kInt16:
        Append(&t.data, static_cast<int16_t>(v));
        break;
      case DType::kInt8:
        Append(&t.data, static_cast<int8_t>(v));
        break;
      case DType::kUInt8:
        Append(&t.data, static_cast<uint8_t>(v));
        break;
      case DType::kBool:
        Append(&t.data, static_cast<uint8_t>(v != 0));
        break;
    }
  }
  return t;
}

// `start + step * i` for i in [0, numel), reshaped to `shape`.
HostTensor Arange(DType dtype, std::vector<int64_t> shape, double start, double step) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  std::vector<double> values(numel);
  for (int64_t i = 0; i < numel; ++i) values[i] = start + step * static_cast<double>(i);
  return Make(dtype, std::move(shape), values);
}

TEST(FormatTensorTest, IntegralFloatsPrintWithTrailingDot) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {3}, {1, 2, 3}), false), "tensor([1., 2., 3.])");
}

TEST(FormatTensorTest, FixedNotationPadsToWidestElement) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2}, {0.1, -0.25}), false),
            "tensor([ 0.1000, -0.2500])");
}

TEST(FormatTensorTest, SmallMagnitudeSwitchesToScientific) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2}, {1e-05, 1}), false),
            "tensor([1.0000e-05, 1.0000e+00])");
}

TEST(FormatTensorTest, Int64HasNoDtypeSuffix) {
  EXPECT_EQ(FormatTensor(Arange(DType::kInt64, {3}, 0, 1), false), "tensor([0, 1, 2])");
}

TEST(FormatTensorTest, ScalarFloat) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {}, {2}), false), "tensor(2.)");
}

TEST(FormatTensorTest, ScalarFraction) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {}, {0.5}), false), "tensor(0.5000)");
}

TEST(FormatTensorTest, ScalarInt) {
  EXPECT_EQ(FormatTensor(Make(DType::kInt64, {}, {5}), false), "tensor(5)");
}

TEST(FormatTensorTest, ScalarBool) {
  EXPECT_EQ(FormatTensor(Make(DType::kBool, {}, {1}), false), "tensor(True)");
}

TEST(FormatTensorTest, ScalarNaN) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {}, {kNaN}), false), "tensor(nan)");
}

TEST(FormatTensorTest, ZerosMatrix) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2, 2}, {0, 0, 0, 0}), false),
            R"(tensor([[0., 0.],
        [0., 0.]]))");
}

TEST(FormatTensorTest, BoolPadsTrue) {
  EXPECT_EQ(FormatTensor(Make(DType::kBool, {2}, {1, 0}), false), "tensor([ True, False])");
}

TEST(FormatTensorTest, Float64ShowsDtype) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat64, {1}, {1.5}), false),
            "tensor([1.5000], dtype=torch.float64)");
}

TEST(FormatTensorTest, EmptyMatrixShowsSize) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {0, 3}, {}), false), "tensor([], size=(0, 3))");
}

TEST(FormatTensorTest, EmptyVector) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {0}, {}), false), "tensor([])");
}

TEST(FormatTensorTest, EmptyInt64ShowsDtype) {
  EXPECT_EQ(FormatTensor(Make(DType::kInt64, {0}, {}), false), "tensor([], dtype=torch.int64)");
}

TEST(FormatTensorTest, EmptyBoolShowsDtype) {
  EXPECT_EQ(FormatTensor(Make(DType::kBool, {0}, {}), false), "tensor([], dtype=torch.bool)");
}

TEST(FormatTensorTest, EmptyFloat64ShowsSizeAndDtype) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat64, {2, 0, 3}, {}), false),
            "tensor([], size=(2, 0, 3), dtype=torch.float64)");
}

TEST(FormatTensorTest, SummarizedVector) {
  EXPECT_EQ(FormatTensor(Arange(DType::kInt64, {2000}, 0, 1), false),
            "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])");
}

TEST(FormatTensorTest, ThreeDimsSeparatedByBlankLine) {
  EXPECT_EQ(FormatTensor(Arange(DType::kInt64, {2, 3, 2}, 0, 1), false),
            R"(tensor([[[ 0,  1],
         [ 2,  3],
         [ 4,  5]],

        [[ 6,  7],
         [ 8,  9],
         [10, 11]]]))");
}

TEST(FormatTensorTest, FourDimsSeparatedByTwoBlankLines) {
  EXPECT_EQ(FormatTensor(Arange(DType::kFloat32, {2, 1, 2, 2}, -3, 0.5), false),
            R"(tensor([[[[-3.0000, -2.5000],
          [-2.0000, -1.5000]]],


        [[[-1.0000, -0.5000],
          [ 0.0000,  0.5000]]]]))");
}

TEST(FormatTensorTest, LongRowWrapsAtEightyColumns) {
  EXPECT_EQ(FormatTensor(Arange(DType::kFloat32, {30}, 0, 1), false),
            R"(tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.,
        14., 15., 16., 17., 18., 19., 20., 21., 22., 23., 24., 25., 26., 27.,
        28., 29.]))");
}

TEST(FormatTensorTest, SummarizedMatrix) {
  EXPECT_EQ(FormatTensor(Arange(DType::kFloat32, {100, 100}, 0, 0), false),
            R"(tensor([[0., 0., 0.,  ..., 0., 0., 0.],
        [0., 0., 0.,  ..., 0., 0., 0.],
        [0., 0., 0.,  ..., 0., 0., 0.],
        ...,
        [0., 0., 0.,  ..., 0., 0., 0.],
        [0., 0., 0.,  ..., 0., 0., 0.],
        [0., 0., 0.,  ..., 0., 0., 0.]]))");
}

TEST(FormatTensorTest, SummarizedMatrixOfIntegers) {
  EXPECT_EQ(FormatTensor(Arange(DType::kInt32, {50, 40}, 0, 1), false),
            R"(tensor([[   0,    1,    2,  ...,   37,   38,   39],
        [  40,   41,   42,  ...,   77,   78,   79],
        [  80,   81,   82,  ...,  117,  118,  119],
        ...,
        [1880, 1881, 1882,  ..., 1917, 1918, 1919],
        [1920, 1921, 1922,  ..., 1957, 1958, 1959],
        [1960, 1961, 1962,  ..., 1997, 1998, 1999]], dtype=torch.int32))");
}

TEST(FormatTensorTest, SummarizedThreeDims) {
  EXPECT_EQ(FormatTensor(Arange(DType::kFloat32, {10, 10, 20}, 0, 0.25), false),
            R"(tensor([[[0.0000e+00, 2.5000e-01, 5.0000e-01,  ..., 4.2500e+00,
          4.5000e+00, 4.7500e+00],
         [5.0000e+00, 5.2500e+00, 5.5000e+00,  ..., 9.2500e+00,
          9.5000e+00, 9.7500e+00],
         [1.0000e+01, 1.0250e+01, 1.0500e+01,  ..., 1.4250e+01,
          1.4500e+01, 1.4750e+01],
         ...,
         [3.5000e+01, 3.5250e+01, 3.5500e+01,  ..., 3.9250e+01,
          3.9500e+01, 3.9750e+01],
         [4.0000e+01, 4.0250e+01, 4.0500e+01,  ..., 4.4250e+01,
          4.4500e+01, 4.4750e+01],
         [4.5000e+01, 4.5250e+01, 4.5500e+01,  ..., 4.9250e+01,
          4.9500e+01, 4.9750e+01]],

        [[5.0000e+01, 5.0250e+01, 5.0500e+01,  ..., 5.4250e+01,
          5.4500e+01, 5.4750e+01],
         [5.5000e+01, 5.5250e+01, 5.5500e+01,  ..., 5.9250e+01,
          5.9500e+01, 5.9750e+01],
         [6.0000e+01, 6.0250e+01, 6.0500e+01,  ..., 6.4250e+01,
          6.4500e+01, 6.4750e+01],
         ...,
         [8.5000e+01, 8.5250e+01, 8.5500e+01,  ..., 8.9250e+01,
          8.9500e+01, 8.9750e+01],
         [9.0000e+01, 9.0250e+01, 9.0500e+01,  ..., 9.4250e+01,
          9.4500e+01, 9.4750e+01],
         [9.5000e+01, 9.5250e+01, 9.5500e+01,  ..., 9.9250e+01,
          9.9500e+01, 9.9750e+01]],

        [[1.0000e+02, 1.0025e+02, 1.0050e+02,  ..., 1.0425e+02,
          1.0450e+02, 1.0475e+02],
         [1.0500e+02, 1.0525e+02, 1.0550e+02,  ..., 1.0925e+02,
          1.0950e+02, 1.0975e+02],
         [1.1000e+02, 1.1025e+02, 1.1050e+02,  ..., 1.1425e+02,
          1.1450e+02, 1.1475e+02],
         ...,
         [1.3500e+02, 1.3525e+02, 1.3550e+02,  ..., 1.3925e+02,
          1.3950e+02, 1.3975e+02],
         [1.4000e+02, 1.4025e+02, 1.4050e+02,  ..., 1.4425e+02,
          1.4450e+02, 1.4475e+02],
         [1.4500e+02, 1.4525e+02, 1.4550e+02,  ..., 1.4925e+02,
          1.4950e+02, 1.4975e+02]],

        ...,

        [[3.5000e+02, 3.5025e+02, 3.5050e+02,  ..., 3.5425e+02,
          3.5450e+02, 3.5475e+02],
         [3.5500e+02, 3.5525e+02, 3.5550e+02,  ..., 3.5925e+02,
          3.5950e+02, 3.5975e+02],
         [3.6000e+02, 3.6025e+02, 3.6050e+02,  ..., 3.6425e+02,
          3.6450e+02, 3.6475e+02],
         ...,
         [3.8500e+02, 3.8525e+02, 3.8550e+02,  ..., 3.8925e+02,
          3.8950e+02, 3.8975e+02],
         [3.9000e+02, 3.9025e+02, 3.9050e+02,  ..., 3.9425e+02,
          3.9450e+02, 3.9475e+02],
         [3.9500e+02, 3.9525e+02, 3.9550e+02,  ..., 3.9925e+02,
          3.9950e+02, 3.9975e+02]],

        [[4.0000e+02, 4.0025e+02, 4.0050e+02,  ..., 4.0425e+02,
          4.0450e+02, 4.0475e+02],
         [4.0500e+02, 4.0525e+02, 4.0550e+02,  ..., 4.0925e+02,
          4.0950e+02, 4.0975e+02],
         [4.1000e+02, 4.1025e+02, 4.1050e+02,  ..., 4.1425e+02,
          4.1450e+02, 4.1475e+02],
         ...,
         [4.3500e+02, 4.3525e+02, 4.3550e+02,  ..., 4.3925e+02,
          4.3950e+02, 4.3975e+02],
         [4.4000e+02, 4.4025e+02, 4.4050e+02,  ..., 4.4425e+02,
          4.4450e+02, 4.4475e+02],
         [4.4500e+02, 4.4525e+02, 4.4550e+02,  ..., 4.4925e+02,
          4.4950e+02, 4.4975e+02]],

        [[4.5000e+02, 4.5025e+02, 4.5050e+02,  ..., 4.5425e+02,
          4.5450e+02, 4.5475e+02],
         [4.5500e+02, 4.5525e+02, 4.5550e+02,  ..., 4.5925e+02,
          4.5950e+02, 4.5975e+02],
         [4.6000e+02, 4.6025e+02, 4.6050e+02,  ..., 4.6425e+02,
          4.6450e+02, 4.6475e+02],
         ...,
         [4.8500e+02, 4.8525e+02, 4.8550e+02,  ..., 4.8925e+02,
          4.8950e+02, 4.8975e+02],
         [4.9000e+02, 4.9025e+02, 4.9050e+02,  ..., 4.9425e+02,
          4.9450e+02, 4.9475e+02],
         [4.9500e+02, 4.9525e+02, 4.9550e+02,  ..., 4.9925e+02,
          4.9950e+02, 4.9975e+02]]]))");
}

TEST(FormatTensorTest, SummarizedOuterOnly) {
  // Inner dimensions of six or fewer items are not cut.
  EXPECT_EQ(FormatTensor(Arange(DType::kFloat32, {1001, 1}, 0, 1), false),
            R"(tensor([[   0.],
        [   1.],
        [   2.],
        ...,
        [ 998.],
        [ 999.],
        [1000.]]))");
}

TEST(FormatTensorTest, ParameterWithRequiresGrad) {
  HostTensor t = Make(DType::kFloat32, {2, 2}, {-0.0053, 0.3793, -0.582, -0.5204});
  t.requires_grad = true;
  EXPECT_EQ(FormatTensor(t, true),
            R"(Parameter containing:
tensor([[-0.0053,  0.3793],
        [-0.5820, -0.5204]], requires_grad=True))");
}

TEST(FormatTensorTest, ParameterWithoutRequiresGrad) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2}, {1, 2}), true),
            R"(Parameter containing:
tensor([1., 2.]))");
}

TEST(FormatTensorTest, RequiresGradOnPlainTensor) {
  HostTensor t = Make(DType::kFloat32, {2}, {0.5, 1});
  t.requires_grad = true;
  EXPECT_EQ(FormatTensor(t, false), "tensor([0.5000, 1.0000], requires_grad=True)");
}

TEST(FormatTensorTest, NonFiniteInIntMode) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {4}, {1, kNaN, kInf, -kInf}), false),
            "tensor([1., nan, inf, -inf])");
}

TEST(FormatTensorTest, NonFiniteInFixedMode) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2}, {1.5, kNaN}), false),
            "tensor([1.5000,    nan])");
}

TEST(FormatTensorTest, OnlyZeroAndNaN) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2}, {0, kNaN}), false), "tensor([0., nan])");
}

TEST(FormatTensorTest, NegativeZero) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {1}, {-0.0}), false), "tensor([-0.])");
}

TEST(FormatTensorTest, ZeroInFixedMode) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2}, {0, 1.5}), false), "tensor([0.0000, 1.5000])");
}

TEST(FormatTensorTest, LargeIntegersUseScientific) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2}, {1000000000, 1}), false),
            "tensor([1.0000e+09, 1.0000e+00])");
}

TEST(FormatTensorTest, WideRangeIntegersUseScientific) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2}, {100000, 1}), false),
            "tensor([1.0000e+05, 1.0000e+00])");
}

TEST(FormatTensorTest, IntegersUpToHundredMillionStayFixed) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat64, {2}, {100000000, 1000000}), false),
            "tensor([100000000.,   1000000.], dtype=torch.float64)");
}

TEST(FormatTensorTest, NaNInScientificMode) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {3}, {1e-05, kNaN, -kInf}), false),
            "tensor([1.0000e-05,        nan,       -inf])");
}

TEST(FormatTensorTest, HugeFloat64) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat64, {2}, {1.5e+200, -2.5e-200}), false),
            "tensor([ 1.5000e+200, -2.5000e-200], dtype=torch.float64)");
}

TEST(FormatTensorTest, Float16) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat16, {3}, {0.1, 1000, -2.5}), false),
            "tensor([ 9.9976e-02,  1.0000e+03, -2.5000e+00], dtype=torch.float16)");
}

TEST(FormatTensorTest, BFloat16) {
  EXPECT_EQ(FormatTensor(Make(DType::kBFloat16, {2}, {0.1, 3.14159}), false),
            "tensor([0.1001, 3.1406], dtype=torch.bfloat16)");
}

TEST(FormatTensorTest, Int32ShowsDtype) {
  EXPECT_EQ(FormatTensor(Make(DType::kInt32, {3}, {-5, 0, 123}), false),
            "tensor([ -5,   0, 123], dtype=torch.int32)");
}

TEST(FormatTensorTest, Int16ShowsDtype) {
  EXPECT_EQ(FormatTensor(Make(DType::kInt16, {2}, {-32768, 32767}), false),
            "tensor([-32768,  32767], dtype=torch.int16)");
}

TEST(FormatTensorTest, Int8ShowsDtype) {
  EXPECT_EQ(FormatTensor(Make(DType::kInt8, {2}, {-128, 7}), false),
            "tensor([-128,    7], dtype=torch.int8)");
}

TEST(FormatTensorTest, UInt8ShowsDtype) {
  EXPECT_EQ(FormatTensor(Make(DType::kUInt8, {3}, {0, 255, 7}), false),
            "tensor([  0, 255,   7], dtype=torch.uint8)");
}

TEST(FormatTensorTest, CudaDeviceSuffixBeforeDtype) {
  HostTensor t = Make(DType::kFloat64, {2}, {1, 2});
  t.device = "cuda:0";
  EXPECT_EQ(FormatTensor(t, false), "tensor([1., 2.], device='cuda:0', dtype=torch.float64)");
}

TEST(FormatTensorTest, CudaDeviceSuffix) {
  HostTensor t = Make(DType::kFloat32, {2}, {1, 2});
  t.device = "cuda:1";
  EXPECT_EQ(FormatTensor(t, false), "tensor([1., 2.], device='cuda:1')");
}

TEST(FormatTensorTest, DeviceRequiresGradAndDtypeOrder) {
  HostTensor t = Make(DType::kFloat16, {2}, {1, 2});
  t.device = "cuda:0";
  t.requires_grad = true;
  EXPECT_EQ(FormatTensor(t, true),
            R"(Parameter containing:
tensor([1., 2.], device='cuda:0', dtype=torch.float16, requires_grad=True))");
}

TEST(FormatTensorTest, RandomMatrix) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {3, 4},
                              {-1.6038367748260498, 0.06409991532564163, 0.7408912777900696,
                               0.15261919796466827, 0.8637439012527466, 2.9130992889404297,
                               -1.4788233041763306, 0.9454729557037354, -1.6661354303359985,
                               0.34374457597732544, -0.5124437212944031, 1.3237589597702026}),
                         false),
            R"(tensor([[-1.6038,  0.0641,  0.7409,  0.1526],
        [ 0.8637,  2.9131, -1.4788,  0.9455],
        [-1.6661,  0.3437, -0.5124,  1.3238]]))");
}

TEST(FormatTensorTest, RandomVectorWraps) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {20},
                              {-0.8602802157402039,  0.5194932222366333,  -1.2651437520980835,
                               -2.1591389179229736,  0.43473395705223083, 1.733289361000061,
                               0.5201341509819031,   -1.0021657943725586, 0.26834553480148315,
                               0.7671747207641602,   1.1912720203399658,  -1.1574108600616455,
                               0.6962794065475464,   0.35138368606567383, -0.032415084540843964,
                               0.013181579299271107, -0.6792499423027039, -0.6205320358276367,
                               1.331214189529419,    0.2588385045528412}),
                         false),
            R"(tensor([-0.8603,  0.5195, -1.2651, -2.1591,  0.4347,  1.7333,  0.5201, -1.0022,
         0.2683,  0.7672,  1.1913, -1.1574,  0.6963,  0.3514, -0.0324,  0.0132,
        -0.6792, -0.6205,  1.3312,  0.2588]))");
}

TEST(FormatTensorTest, RandomMatrixRowsWrap) {
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2, 15},
                              {-0.48148390650749207,  -2.4917895793914795,  -0.8765637874603271,
                               -0.5055091381072998,   -1.2831292152404785,  -1.3303284645080566,
                               0.8259925842285156,    -0.24721501767635345, -1.6997060775756836,
                               -1.3351528644561768,   -0.29963889718055725, 1.114806890487671,
                               -1.5064088106155396,   1.5901120901107788,   -0.48732519149780273,
                               -1.7111021280288696,   0.513090193271637,    1.4370919466018677,
                               -0.22180411219596863,  0.6488165259361267,   -0.3178911805152893,
                               -0.010978255420923233, 1.6654164791107178,   0.8957864046096802,
                               -1.2026011943817139,   2.7996270656585693,   -1.0211962461471558,
                               0.8481069803237915,    0.49808260798454285,  -0.084441639482975}),
                         false),
            R"(tensor([[-0.4815, -2.4918, -0.8766, -0.5055, -1.2831, -1.3303,  0.8260, -0.2472,
         -1.6997, -1.3352, -0.2996,  1.1148, -1.5064,  1.5901, -0.4873],
        [-1.7111,  0.5131,  1.4371, -0.2218,  0.6488, -0.3179, -0.0110,  1.6654,
          0.8958, -1.2026,  2.7996, -1.0212,  0.8481,  0.4981, -0.0844]]))");
}

TEST(FormatTensorTest, ScientificVectorWraps) {
  EXPECT_EQ(
      FormatTensor(Make(DType::kFloat32, {12},
                        {2.0249333374522394e-06, -1.638057824493444e-06, 8.370597242901567e-06,
                         -7.12439668859588e-06, -1.1741498383344151e-05, 4.752679615194211e-06,
                         1.7373948139720596e-05, -1.3664366633747704e-06, 1.7033167750923894e-05,
                         -8.82183485373389e-07, 1.557242103444878e-05, 9.634099114919081e-06}),
                   false),
      R"(tensor([ 2.0249e-06, -1.6381e-06,  8.3706e-06, -7.1244e-06, -1.1741e-05,
         4.7527e-06,  1.7374e-05, -1.3664e-06,  1.7033e-05, -8.8218e-07,
         1.5572e-05,  9.6341e-06]))");
}

TEST(FormatTensorTest, SummaryFormatsOnlyShownElements) {
  // The hidden middle elements do not affect the notation or the width.
  std::vector<double> values(2000, 1e10);
  for (int i = 0; i < 3; ++i) {
    values[i] = 0.5;
    values[1997 + i] = 0.25;
  }
  EXPECT_EQ(FormatTensor(Make(DType::kFloat32, {2000}, values), false),
            "tensor([0.5000, 0.5000, 0.5000,  ..., 0.2500, 0.2500, 0.2500])");
}

TEST(FormatTensorTest, DtypeSuffixWrapsToNextLine) {
  EXPECT_EQ(FormatTensor(Arange(DType::kFloat64, {11}, 0, 1), false),
            R"(tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10.],
       dtype=torch.float64))");
}

TEST(FormatTensorTest, SuffixesWrapOneAtATime) {
  HostTensor t = Arange(DType::kFloat32, {14}, 0, 1);
  t.device = "cuda:0";
  t.requires_grad = true;
  EXPECT_EQ(FormatTensor(t, false),
            R"(tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.],
       device='cuda:0', requires_grad=True))");
}

TEST(FormatTensorTest, SuffixAfterMultiLineTensor) {
  HostTensor t = Arange(DType::kInt32, {2, 3}, 0, 1);
  t.device = "cuda:0";
  EXPECT_EQ(FormatTensor(t, false),
            R"(tensor([[0, 1, 2],
        [3, 4, 5]], device='cuda:0', dtype=torch.int32))");
}

TEST(FormatTensorTest, BareCudaPrintsIndexZero) {
  HostTensor t = Make(DType::kFloat32, {1}, {1});
  t.device = "cuda";
  EXPECT_EQ(FormatTensor(t, false), "tensor([1.], device='cuda:0')");
}

TEST(FormatTensorTest, ByteCountMismatchIsReportedNotRead) {
  HostTensor t = Make(DType::kFloat32, {3}, {1, 2});
  EXPECT_EQ(FormatTensor(t, false), "tensor(<invalid: 8 bytes for shape (3,) of torch.float32>)");
}

TEST(FormatTensorTest, NegativeDimensionIsReportedNotRead) {
  HostTensor t = Make(DType::kInt64, {-1, 2}, {});
  EXPECT_EQ(FormatTensor(t, false), "tensor(<invalid: 0 bytes for shape (-1, 2) of torch.int64>)");
}

}  // namespace
}  // namespace paramd::cli
