// PyRepr against Python 3's repr(str): each expected literal below is what python3 printed.
#include "client/cli/py_repr.h"

#include "gtest/gtest.h"

namespace paramd::cli {
namespace {

// Control characters in a key printed raw in _IncompatibleKeys (a newline broke the line).
TEST(PyReprTest, EscapesAsPythonReprDoes) {
  EXPECT_EQ(PyRepr("x\ny"), R"('x\ny')");
  EXPECT_EQ(PyRepr("tab\there"), R"('tab\there')");
  EXPECT_EQ(PyRepr("cr\r"), R"('cr\r')");
  EXPECT_EQ(PyRepr(std::string("\x00\x1f\x7f", 3)), R"('\x00\x1f\x7f')");
  // U+0080, U+009F (C1), U+00A0 (no-break space), U+00AD (soft hyphen).
  EXPECT_EQ(PyRepr("\xc2\x80\xc2\x9f\xc2\xa0\xc2\xad"), R"('\x80\x9f\xa0\xad')");
  EXPECT_EQ(PyRepr("a\\b"), R"('a\\b')");
  // Printable non-ASCII is kept: é, 中, 😀.
  EXPECT_EQ(PyRepr("\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80"),
            "'\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80'");
  EXPECT_EQ(PyRepr(""), "''");
}

TEST(PyReprTest, ChoosesQuotesAsPythonDoes) {
  EXPECT_EQ(PyRepr("it's"), R"("it's")");
  EXPECT_EQ(PyRepr("say \"hi\""), R"('say "hi"')");
  EXPECT_EQ(PyRepr("both '\" q"), R"('both \'" q')");
}

TEST(PyReprTest, ListsAsPythonDoes) {
  EXPECT_EQ(PyList({"0.weight", "x\ny"}), R"(['0.weight', 'x\ny'])");
  EXPECT_EQ(PyList({}), "[]");
}

}  // namespace
}  // namespace paramd::cli
