// The daemon's log lines: client-supplied values cannot forge a line or flood the log.
#include "server/common/log.h"

#include <algorithm>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

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

TEST(JsonLogTest, ALineIsOneObjectWithTimeLevelMessageAndFields) {
  EXPECT_EQ(FormatJsonLogLine("2026-12-06T00:00:00.000Z", "info", "call",
                              {{"model", "mlp"}, {"version", "7"}, {"duration_ms", "1.250"}}),
            "{\"time\":\"2026-12-06T00:00:00.000Z\",\"level\":\"info\",\"msg\":\"call\","
            "\"model\":\"mlp\",\"version\":7,\"duration_ms\":1.250}\n");
  // A numeric field without a value is null; one that does not read as a number a string.
  EXPECT_EQ(FormatJsonLogLine("t", "info", "x", {{"version", ""}, {"duration_ms", "1e9"}}),
            "{\"time\":\"t\",\"level\":\"info\",\"msg\":\"x\",\"version\":null,"
            "\"duration_ms\":\"1e9\"}\n");
}

TEST(JsonLogTest, HostileValuesStayOneValidLineAndRoundTrip) {
  const std::string hostile = "m\"}\n{\"level\":\"error\",\"msg\":\"FORGED\"}\\\t\r\x01\x7f \xc3\xa9";
  const std::string line = FormatJsonLogLine("t", "warning", hostile, {{"model", hostile}});
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
  const nlohmann::json parsed = nlohmann::json::parse(line);
  EXPECT_EQ(parsed["msg"], hostile);
  EXPECT_EQ(parsed["model"], hostile);
  EXPECT_EQ(parsed["level"], "warning");
}

TEST(JsonLogTest, BrokenUtf8IsShownAsInTextAndLongValuesAreCut) {
  const std::string line = FormatJsonLogLine("t", "info", "x", {{"path", std::string("a\xff", 2)}});
  EXPECT_EQ(nlohmann::json::parse(line)["path"], "a\\xff");
  const std::string huge(4 << 20, 'n');
  const std::string cut = FormatJsonLogLine("t", "info", "x", {{"model", huge}});
  EXPECT_LT(cut.size(), 2 * kMaxLogValueBytes);
  EXPECT_THAT(nlohmann::json::parse(cut)["model"].get<std::string>(),
              HasSubstr("...(4194304 bytes)"));
  // A multi-byte letter at the limit is dropped whole, never split.
  const std::string letters = std::string(kMaxLogValueBytes - 1, 'a') + "\xc3\xa9";
  EXPECT_NO_THROW(nlohmann::json::parse(FormatJsonLogLine("t", "info", "x", {{"m", letters}})));
}

}  // namespace
}  // namespace paramd::common
