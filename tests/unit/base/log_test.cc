// The daemon's log lines: client-supplied values cannot forge a line or flood the log.
#include "server/common/log.h"

#include <algorithm>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace paramd::common {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(LogTest, PlainValuesStayBareAndSpacesAreQuoted) {
  EXPECT_EQ(FormatLogLine("info", "create model", {{"model", "mlp"}, {"status", "OK"}}),
            " level=info msg=\"create model\" model=mlp status=OK\n");
  EXPECT_EQ(FormatLogLine("info", "x", {{"note", "a b"}, {"empty", ""}, {"eq", "a=b"}}),
            " level=info msg=\"x\" note=\"a b\" empty=\"\" eq=\"a=b\"\n");
}

TEST(LogTest, ANewlineInAValueCannotForgeALine) {
  const std::string line = FormatLogLine(
      "warning", "save checkpoint",
      {{"model", "m\n2026-12-06T00:00:00.000Z level=error msg=\"paramd stopped\" FORGED=1"},
       {"error", "bad \"name\"\r\n"}});
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
  EXPECT_THAT(line, HasSubstr("model=\"m\\n2026-12-06T00:00:00.000Z level=error msg=\\\"paramd "
                              "stopped\\\" FORGED=1\""));
  EXPECT_THAT(line, HasSubstr("error=\"bad \\\"name\\\"\\r\\n\""));
  EXPECT_THAT(line, Not(HasSubstr("\nlevel=error")));
}

TEST(LogTest, ControlBytesAndBrokenUtf8AreEscaped) {
  const std::string line =
      FormatLogLine("info", "x", {{"path", std::string("a\x1b[31m\xff", 7)}});
  EXPECT_THAT(line, HasSubstr("path=\"a\\x1b[31m\\xff\""));
}

TEST(LogTest, EachValueIsCutAtTheLimit) {
  const std::string huge(4 << 20, 'n');
  const std::string line = FormatLogLine("warning", "save checkpoint",
                                         {{"model", huge}, {"error", "model '" + huge + "'"}});
  EXPECT_LT(line.size(), 3 * kMaxLogValueBytes);
  EXPECT_THAT(line, HasSubstr("...(4194304 bytes)"));
}

}  // namespace
}  // namespace paramd::common
