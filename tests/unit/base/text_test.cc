// Untrusted text made printable: escaping for logs, quoting and cutting for messages.
#include "base/text.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace paramd {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(EscapeTextTest, EscapesNewlinesQuotesControlBytesAndBrokenUtf8) {
  EXPECT_EQ(EscapeText("mlp"), "mlp");
  EXPECT_EQ(EscapeText("a\nlevel=error msg=\"x\""), "a\\nlevel=error msg=\\\"x\\\"");
  EXPECT_EQ(EscapeText("a\r\tb\\c"), "a\\r\\tb\\\\c");
  EXPECT_EQ(EscapeText(std::string("\x00\x1b\x7f", 3)), "\\x00\\x1b\\x7f");
  // Valid UTF-8 passes; a lone continuation byte, a cut sequence and an overlong form don't.
  EXPECT_EQ(EscapeText("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(EscapeText("\x80"), "\\x80");
  EXPECT_EQ(EscapeText("a\xc3"), "a\\xc3");
  EXPECT_EQ(EscapeText("\xc0\xaf"), "\\xc0\\xaf");
  EXPECT_EQ(EscapeText("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
}

TEST(EscapeTextTest, CutsPastTheLimitAtACharacterBoundaryAndSaysHowLong) {
  const std::string big(1 << 20, 'x');
  const std::string escaped = EscapeText(big, 1024);
  EXPECT_EQ(escaped, std::string(1024, 'x') + "...(1048576 bytes)");
  // "é" is two bytes: a cut at 3 keeps "aé" whole rather than half of the second é.
  EXPECT_EQ(EscapeText("a\xc3\xa9\xc3\xa9", 4), "a\xc3\xa9...(5 bytes)");
  EXPECT_EQ(EscapeText("abc", 3), "abc");
}

TEST(QuoteNameTest, QuotesEscapesAndCutsLongNames) {
  EXPECT_EQ(QuoteName("mlp"), "'mlp'");
  EXPECT_EQ(QuoteName("a\nb"), "'a\\nb'");
  const std::string quoted = QuoteName(std::string(10000, 'n'));
  EXPECT_THAT(quoted, StartsWith("'" + std::string(kMaxQuotedNameBytes, 'n') + "..."));
  EXPECT_THAT(quoted, EndsWith("(10000 bytes)'"));
  EXPECT_LT(quoted.size(), kMaxQuotedNameBytes + 32);
  EXPECT_EQ(ShortName("w"), "w");
}

TEST(TruncateTextTest, KeepsShortTextAndMarksCuts) {
  EXPECT_EQ(TruncateText("short", 10), "short");
  const std::string cut = TruncateText(std::string(5000, 'm'), 2048);
  EXPECT_THAT(cut, HasSubstr("... (5000 bytes in all)"));
  EXPECT_LT(cut.size(), 2100u);
}

TEST(Utf8Test, ValidatesStrictly) {
  EXPECT_TRUE(IsUtf8("plain"));
  EXPECT_TRUE(IsUtf8("\xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsUtf8("\xe0\x80\x80"));      // overlong
  EXPECT_EQ(Utf8SequenceLength("\xc3\xa9", 0), 2u);
  EXPECT_EQ(Utf8SequenceLength("\xc3", 0), 0u);
}

}  // namespace
}  // namespace paramd
