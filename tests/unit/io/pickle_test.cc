// The restricted unpickler and the protocol-2 pickler (pytorch-semantics.md §5.2–§5.6):
// opcodes, memo, the globals allow-list, limits against hostile input, and CPython's exact
// output for memoization and batching.
#include "server/io/pickle.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

using ::testing::HasSubstr;
using test_util::AsSpan;

// Pickle bytes assembled opcode by opcode.
class Asm {
 public:
  Asm& Op(int op) {
    bytes.push_back(static_cast<char>(op));
    return *this;
  }
  Asm& Le(uint64_t value, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
    return *this;
  }
  Asm& Raw(const std::string& raw) {
    bytes += raw;
    return *this;
  }
  Asm& Proto(int version) { return Op(0x80).Op(version); }
  Asm& Global(const std::string& module_name, const std::string& name) {
    return Op('c').Raw(module_name + "\n" + name + "\n");
  }
  Asm& Str(const std::string& text) { return Op('X').Le(text.size(), 4).Raw(text); }
  Asm& Put(int index) { return Op('q').Op(index); }
  Asm& Get(int index) { return Op('h').Op(index); }
  Asm& K(int value) { return Op('K').Op(value); }
  Asm& Stop() { return Op('.'); }
  std::string bytes;
};

absl::Status UnpickleError(const std::string& bytes, const UnpickleLimits& limits = {}) {
  return Unpickle(AsSpan(bytes), limits).status();
}

void ExpectInvalid(const absl::Status& status, const std::string& fragment) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(fragment));
}

// --- reading --------------------------------------------------------------------------

TEST(UnpickleTest, ReadsEveryProtocol2ValueKind_PytorchSemantics5) {
  Asm a;
  a.Proto(2).Op(']').Put(0).Op('(');
  a.Op('N').Op(0x88).Op(0x89);
  a.K(200).Op('M').Le(65535, 2).Op('J').Le(static_cast<uint32_t>(-5), 4);
  a.Op(0x8a).Op(0);                                       // LONG1 0
  a.Op(0x8a).Op(5).Le(0x0080000000ULL, 5);                // LONG1 2**31
  a.Op(0x8a).Op(8).Le(0x8000000000000000ULL, 8);          // LONG1 -2**63
  a.Op(0x8a).Op(1).Op(0xFF);                              // LONG1 -1
  a.Op('G').Raw(std::string("\x3f\xf8\0\0\0\0\0\0", 8));  // 1.5, big-endian
  a.Str("h\xc3\xa9").Op('U').Op(2).Raw("ab");
  a.Op(')').K(1).Op(0x85).K(1).K(2).Op(0x86).K(1).K(2).K(3).Op(0x87);
  a.Op('(').K(1).K(2).K(3).K(4).Op('t');
  a.Op('}').Str("k").K(7).Op('s');
  a.Op('e').Stop();
  absl::StatusOr<PickleGraph> graph = Unpickle(AsSpan(a.bytes));
  ASSERT_TRUE(graph.ok()) << graph.status();
  const PickleValue& list = *graph->root();
  ASSERT_EQ(list.kind, PickleKind::kList);
  ASSERT_EQ(list.items.size(), 19u);
  const auto& v = list.items;
  EXPECT_EQ(v[0]->kind, PickleKind::kNone);
  EXPECT_TRUE(v[1]->bool_value);
  EXPECT_FALSE(v[2]->bool_value);
  EXPECT_EQ(v[3]->int_value, 200);
  EXPECT_EQ(v[4]->int_value, 65535);
  EXPECT_EQ(v[5]->int_value, -5);
  EXPECT_EQ(v[6]->int_value, 0);
  EXPECT_EQ(v[7]->int_value, int64_t{1} << 31);
  EXPECT_EQ(v[8]->int_value, INT64_MIN);
  EXPECT_EQ(v[9]->int_value, -1);
  EXPECT_EQ(v[10]->float_value, 1.5);
  EXPECT_EQ(v[11]->text, "h\xc3\xa9");
  EXPECT_EQ(v[12]->kind, PickleKind::kString);  // Python 2 str decoded as torch.load does
  EXPECT_EQ(v[12]->text, "ab");
  EXPECT_EQ(v[13]->kind, PickleKind::kTuple);
  EXPECT_TRUE(v[13]->items.empty());
  EXPECT_EQ(v[14]->items.size(), 1u);
  EXPECT_EQ(v[15]->items.size(), 2u);
  EXPECT_EQ(v[16]->items.size(), 3u);
  EXPECT_EQ(v[17]->items.size(), 4u);
  ASSERT_EQ(v[18]->kind, PickleKind::kDict);
  EXPECT_EQ(v[18]->entries[0].first->text, "k");
  EXPECT_EQ(v[18]->entries[0].second->int_value, 7);
}

TEST(UnpickleTest, ReadsProtocol4Opcodes_PytorchSemantics5) {
  Asm a;
  a.Proto(4).Op(0x95).Le(0, 8);  // FRAME (its length is only a hint)
  a.Op(0x8c).Op(11).Raw("collections").Op(0x94);
  a.Op(0x8c).Op(11).Raw("OrderedDict").Op(0x94);
  a.Op(0x93).Op(0x94).Op(')').Op('R').Op(0x94);  // STACK_GLOBAL, OrderedDict()
  a.Op('(');
  a.Op(0x8d).Le(1, 8).Raw("a").Op(0x94).Op('C').Op(3).Raw(std::string("\x00\x01\x02", 3)).Op(0x94);
  a.Op(0x8c).Op(1).Raw("b").Op(0x94).Op('B').Le(2, 4).Raw("yz").Op(0x94);
  a.Op(0x8c).Op(1).Raw("c").Op(0x94).Op('h').Op(0);  // BINGET of a MEMOIZEd str
  a.Op('u').Stop();
  absl::StatusOr<PickleGraph> graph = Unpickle(AsSpan(a.bytes));
  ASSERT_TRUE(graph.ok()) << graph.status();
  const PickleValue& dict = *graph->root();
  ASSERT_EQ(dict.kind, PickleKind::kDict);
  EXPECT_TRUE(dict.ordered);
  ASSERT_EQ(dict.entries.size(), 3u);
  EXPECT_EQ(dict.entries[0].first->text, "a");
  EXPECT_EQ(dict.entries[0].second->kind, PickleKind::kBytes);
  EXPECT_EQ(dict.entries[0].second->text, std::string("\x00\x01\x02", 3));
  EXPECT_EQ(dict.entries[1].second->text, "yz");
  EXPECT_EQ(dict.entries[2].second->text, "collections");
}

TEST(UnpickleTest, MemoFetchesTheSameNode_PytorchSemantics5) {
  Asm a;
  a.Proto(2).Op('(').Str("storage").Put(4).Get(4).Op('r').Le(70000, 4).Op('j').Le(70000, 4);
  a.Op('t').Stop();
  absl::StatusOr<PickleGraph> graph = Unpickle(AsSpan(a.bytes));
  ASSERT_TRUE(graph.ok()) << graph.status();
  const auto& items = graph->root()->items;
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0], items[1]);
  EXPECT_EQ(items[0], items[2]);
}

TEST(UnpickleTest, ProtocolTwoBytesAndBuiltinsAreMappedBack_PytorchSemantics5) {
  // b'\xff\x00' at protocol 2: _codecs.encode('\xff\x00', 'latin1').
  Asm a;
  a.Proto(2).Global("_codecs", "encode").Put(0).Str(std::string("\xc3\xbf\x00", 3));
  a.Str("latin1");
  a.Op(0x86).Op('R').Stop();
  absl::StatusOr<PickleGraph> graph = Unpickle(AsSpan(a.bytes));
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_EQ(graph->root()->kind, PickleKind::kBytes);
  EXPECT_EQ(graph->root()->text, std::string("\xff\x00", 2));

  Asm set;
  set.Proto(2).Global("__builtin__", "set").Op(']').Op(0x85).Op('R').Stop();
  graph = Unpickle(AsSpan(set.bytes));
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_TRUE(graph->root()->items[0]->is_global("builtins", "set"));
}

TEST(UnpickleTest, RepeatedDictKeysKeepTheirFirstPosition_PytorchSemantics5) {
  Asm a;
  a.Proto(2).Op('}').Op('(').Str("a").K(1).Str("b").K(2).Str("a").K(3).Op('u').Stop();
  absl::StatusOr<PickleGraph> graph = Unpickle(AsSpan(a.bytes));
  ASSERT_TRUE(graph.ok()) << graph.status();
  const auto& entries = graph->root()->entries;
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].first->text, "a");
  EXPECT_EQ(entries[0].second->int_value, 3);
  EXPECT_EQ(entries[1].first->text, "b");
}

// --- refusals ---------------------------------------------------------------------------

TEST(UnpickleTest, RefusesOsSystemAndOtherBlockedModules_PytorchSemantics5) {
  for (const std::string module_name : {"posix", "os", "nt", "sys"}) {
    Asm a;
    a.Proto(2).Global(module_name, "system").Put(0).Str("touch /tmp/pwned").Op(0x85).Op('R');
    a.Stop();
    ExpectInvalid(UnpickleError(a.bytes), "Trying to load unsupported GLOBAL " + module_name +
                                              ".system whose module " + module_name +
                                              " is blocked.");
  }
  // The same through protocol 4's STACK_GLOBAL.
  Asm stack;
  stack.Proto(4).Op(0x8c).Op(5).Raw("posix").Op(0x8c).Op(6).Raw("system").Op(0x93);
  ExpectInvalid(UnpickleError(stack.bytes), "GLOBAL posix.system whose module posix is blocked");
}

TEST(UnpickleTest, RefusesGlobalsOutsideTheAllowList_PytorchSemantics5) {
  Asm linear;
  linear.Proto(2).Global("torch.nn.modules.linear", "Linear").Put(0).Op(')').Op(0x81).Stop();
  ExpectInvalid(UnpickleError(linear.bytes),
                "Unsupported global: GLOBAL torch.nn.modules.linear.Linear was not an allowed "
                "global by default.");
  ExpectInvalid(UnpickleError(linear.bytes), "save model.state_dict()");
  Asm eval;
  eval.Proto(2).Global("__builtin__", "eval").Stop();
  ExpectInvalid(UnpickleError(eval.bytes), "Unsupported global: GLOBAL eval was not an allowed");
  Asm popen;
  popen.Proto(2).Global("subprocess", "Popen").Stop();
  ExpectInvalid(UnpickleError(popen.bytes), "GLOBAL subprocess.Popen");
  Asm getattr;
  getattr.Proto(2).Global("builtins", "getattr").Stop();
  ExpectInvalid(UnpickleError(getattr.bytes), "GLOBAL getattr");
}

TEST(UnpickleTest, RefusesOpcodesOutsideTheAcceptedSet_PytorchSemantics5) {
  // INST, OBJ, POP, DUP, STRING, UNICODE, INT, LONG, PERSID, EXT1, NEWOBJ_EX, BINBYTES8,
  // ADDITEMS, BYTEARRAY8, READONLY_BUFFER.
  for (int op : std::vector<int>{'i', 'o', '0', '2', 'S', 'V', 'I', 'L', 'P', 0x82, 0x92, 0x8e,
                                 0x90, 0x96, 0x98}) {
    Asm a;
    a.Proto(2).Op(op).Raw("0\n").Stop();
    ExpectInvalid(UnpickleError(a.bytes), "Unsupported operand " + std::to_string(op));
  }
}

TEST(UnpickleTest, RefusesCallsAndChangesTorchNeverWrites_PytorchSemantics5) {
  Asm call_str;
  call_str.Proto(2).Str("os").Op(')').Op('R').Stop();
  ExpectInvalid(UnpickleError(call_str.bytes), "REDUCE of a str; only allowed globals");
  Asm args;
  args.Proto(2).Global("torch", "Size").K(1).Op('R').Stop();
  ExpectInvalid(UnpickleError(args.bytes), "must be a tuple");
  Asm setitem_list;
  setitem_list.Proto(2).Op(']').K(1).K(2).Op('s').Stop();
  ExpectInvalid(UnpickleError(setitem_list.bytes), "Can only SETITEM for dict");
  Asm append_dict;
  append_dict.Proto(2).Op('}').K(1).Op('a').Stop();
  ExpectInvalid(UnpickleError(append_dict.bytes), "Can only append to lists");
  Asm build_dict;
  build_dict.Proto(2).Op('}').Op('}').Op('b').Stop();
  ExpectInvalid(UnpickleError(build_dict.bytes), "Can only build");
  Asm persid;
  persid.Proto(2).Str("module").Op(0x85).Op('Q').Stop();
  ExpectInvalid(UnpickleError(persid.bytes), "Only persistent_load of storage is allowed");
  Asm persid_int;
  persid_int.Proto(2).K(3).Op('Q').Stop();
  ExpectInvalid(UnpickleError(persid_int.bytes), "persistent_load id must be");
  // A list that contains itself.
  Asm cycle;
  cycle.Proto(2).Op(']').Put(0).Get(0).Op('a').Stop();
  ExpectInvalid(UnpickleError(cycle.bytes), "reference cycle");
  // A list changed after being placed in a tuple.
  Asm late;
  late.Proto(2).Op(']').Put(0).Op(0x85).Get(0).K(1).Op('a').Stop();
  ExpectInvalid(UnpickleError(late.bytes), "after it was used inside another object");
  Asm unhashable;
  unhashable.Proto(2).Op('}').Op(']').K(1).Op('s').Stop();
  ExpectInvalid(UnpickleError(unhashable.bytes), "unhashable key");
}

TEST(UnpickleTest, RefusesMalformedStreams_PytorchSemantics5) {
  ExpectInvalid(UnpickleError(""), "truncated: no STOP");
  ExpectInvalid(UnpickleError(Asm().Proto(2).K(1).bytes), "truncated: no STOP");
  ExpectInvalid(UnpickleError(Asm().Proto(9).bytes), "unsupported pickle protocol 9");
  ExpectInvalid(UnpickleError(Asm().Proto(2).Get(3).Stop().bytes), "memo entry 3");
  ExpectInvalid(UnpickleError(Asm().Proto(2).Stop().bytes), "0 values on the stack");
  ExpectInvalid(UnpickleError(Asm().Proto(2).K(1).K(2).Stop().bytes), "2 values on the stack");
  ExpectInvalid(UnpickleError(Asm().Proto(2).Op('(').K(1).Stop().bytes), "open MARK");
  ExpectInvalid(UnpickleError(Asm().Proto(2).Op('t').bytes), "TUPLE without a MARK");
  ExpectInvalid(UnpickleError(Asm().Proto(2).Op('(').Op(0x86).bytes), "too few values");
  ExpectInvalid(UnpickleError(Asm().Proto(2).Op('a').bytes), "APPEND on an empty stack");
  ExpectInvalid(UnpickleError(Asm().Proto(2).K(1).Stop().Raw("x").bytes), "follow the STOP");
  ExpectInvalid(UnpickleError(Asm().Proto(2).Op(0x8a).Op(9).Raw("123456789").Stop().bytes),
                "does not fit 64 bits");
  ExpectInvalid(UnpickleError(Asm().Proto(2).Str("\xff").Stop().bytes), "not valid UTF-8");
  // A huge length against a short input: refused before anything is allocated.
  ExpectInvalid(UnpickleError(Asm().Proto(2).Op('X').Le(0xFFFFFFFF, 4).Raw("ab").bytes),
                "truncated");
  ExpectInvalid(UnpickleError(Asm().Proto(4).Op(0x8d).Le(~uint64_t{0}, 8).bytes), "truncated");
  ExpectInvalid(UnpickleError(Asm().Proto(4).Op(0x95).Le(1000, 8).K(1).Stop().bytes),
                "FRAME of 1000 bytes");
  ExpectInvalid(UnpickleError(Asm().Proto(2).Op('c').Raw("torch\nFloat").bytes),
                "GLOBAL has no end of line");
}

TEST(UnpickleTest, EveryTruncationOfAValidPickleIsRefused_PytorchSemantics5) {
  Asm a;
  a.Proto(2).Global("collections", "OrderedDict").Put(0).Op(')').Op('R').Put(1).Op('(');
  a.Str("w").Put(2).Op(0x8a).Op(2).Le(300, 2).Str("f").Op('G').Raw(std::string(8, '\0'));
  a.Op('u').Stop();
  ASSERT_TRUE(Unpickle(AsSpan(a.bytes)).ok());
  for (size_t length = 0; length < a.bytes.size(); ++length) {
    const std::vector<uint8_t> prefix(a.bytes.begin(), a.bytes.begin() + length);
    EXPECT_EQ(Unpickle(absl::MakeConstSpan(prefix)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << length;
  }
}

TEST(UnpickleTest, DepthAndSizeAreBounded_PytorchSemantics5) {
  // 100000 nested lists: refused at the depth limit, without recursion.
  Asm deep;
  deep.Proto(2);
  for (int i = 0; i < 100000; ++i) deep.Op(']');
  for (int i = 0; i < 99999; ++i) deep.Op('a');
  deep.Stop();
  ExpectInvalid(UnpickleError(deep.bytes), "nest deeper than 200 levels");

  Asm wide;
  wide.Proto(2).Op('(');
  for (int i = 0; i < 100; ++i) wide.K(1);
  wide.Op('t').Stop();
  ExpectInvalid(UnpickleError(wide.bytes, UnpickleLimits{.max_depth = 200, .max_nodes = 50}),
                "more than 50 objects");
  Asm gets;
  gets.Proto(2).K(1).Put(0).Op('(');
  for (int i = 0; i < 100; ++i) gets.Get(0);
  gets.Op('t').Stop();
  ExpectInvalid(UnpickleError(gets.bytes, UnpickleLimits{.max_depth = 200, .max_nodes = 50}),
                "values on the stack");
}

// --- writing ----------------------------------------------------------------------------

TEST(PickleProtocol2Test, WritesIntsAsCPythonDoes_PytorchSemantics5) {
  PickleGraph graph;
  const std::vector<int64_t> values = {0,
                                       255,
                                       256,
                                       65535,
                                       65536,
                                       -1,
                                       INT32_MAX,
                                       INT32_MIN,
                                       int64_t{1} << 31,
                                       -(int64_t{1} << 31) - 1,
                                       INT64_MAX,
                                       INT64_MIN,
                                       128LL << 32,
                                       -(256LL << 32)};
  std::vector<const PickleValue*> items;
  for (int64_t value : values) items.push_back(graph.Int(value));
  absl::StatusOr<std::string> out = PickleProtocol2(*graph.Tuple(items));
  ASSERT_TRUE(out.ok()) << out.status();
  Asm expected;
  expected.Proto(2).Op('(');
  expected.K(0).K(255).Op('M').Le(256, 2).Op('M').Le(65535, 2).Op('J').Le(65536, 4);
  expected.Op('J').Le(0xFFFFFFFF, 4).Op('J').Le(0x7FFFFFFF, 4).Op('J').Le(0x80000000, 4);
  expected.Op(0x8a).Op(5).Le(0x0080000000ULL, 5);        // 2**31
  expected.Op(0x8a).Op(5).Le(0xFF7FFFFFFFULL, 5);        // -2**31 - 1
  expected.Op(0x8a).Op(8).Le(0x7FFFFFFFFFFFFFFFULL, 8);  // int64 max
  expected.Op(0x8a).Op(8).Le(0x8000000000000000ULL, 8);  // int64 min
  expected.Op(0x8a).Op(6).Le(0x008000000000ULL, 6);      // 128 << 32 needs a sign byte
  expected.Op(0x8a).Op(6).Le(0xFF0000000000ULL, 6);      // -(256 << 32)
  expected.Op('t').Put(0).Stop();
  EXPECT_EQ(*out, expected.bytes);
  // And they read back.
  absl::StatusOr<PickleGraph> back = Unpickle(AsSpan(*out));
  ASSERT_TRUE(back.ok()) << back.status();
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(back->root()->items[i]->int_value, values[i]) << i;
  }
}

TEST(PickleProtocol2Test, MemoizesByNodeIdentityAndGlobalsByName_PytorchSemantics5) {
  PickleGraph graph;
  const PickleValue* shared = graph.String("cpu");
  const PickleValue* tuple =
      graph.Tuple({shared, graph.String("cpu"), shared, graph.Global("torch", "FloatStorage"),
                   graph.Global("torch", "FloatStorage"), graph.Global("builtins", "set")});
  absl::StatusOr<std::string> out = PickleProtocol2(*graph.Tuple({tuple, tuple}));
  ASSERT_TRUE(out.ok()) << out.status();
  Asm expected;
  expected.Proto(2).Op('(').Str("cpu").Put(0).Str("cpu").Put(1).Get(0);
  expected.Global("torch", "FloatStorage").Put(2).Get(2);
  expected.Global("__builtin__", "set").Put(3).Op('t').Put(4).Get(4).Op(0x86).Put(5).Stop();
  EXPECT_EQ(*out, expected.bytes);
}

TEST(PickleProtocol2Test, UsesLongBinputPast255_PytorchSemantics5) {
  PickleGraph graph;
  std::vector<const PickleValue*> items;
  for (int i = 0; i < 300; ++i) items.push_back(graph.String("s"));
  items.push_back(items.back());
  absl::StatusOr<std::string> out = PickleProtocol2(*graph.Tuple(items));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NE(out->find(std::string("q\xff", 2)), std::string::npos);
  EXPECT_NE(out->find(std::string("r\x00\x01\x00\x00", 5)), std::string::npos);
  EXPECT_NE(out->find(std::string("j\x2b\x01\x00\x00", 5)), std::string::npos);  // BINGET 299
}

// Counts (MARK ... SETITEMS) batches and lone SETITEMs in the pickle of a dict of n ints.
std::pair<int, int> Batches(bool ordered, int n) {
  PickleGraph graph;
  PickleValue* dict = graph.Dict(ordered);
  for (int i = 0; i < n; ++i) dict->entries.emplace_back(graph.Int(i % 200), graph.Int(1));
  absl::StatusOr<std::string> out = PickleProtocol2(*dict);
  EXPECT_TRUE(out.ok()) << out.status();
  int setitems = 0, setitem = 0;
  // Keys and values are BININT1 (2 bytes each), so opcodes sit at known places.
  size_t pos =
      ordered ? 2 + 1 + std::string("collections\nOrderedDict\n").size() + 2 + 2 + 2 : 2 + 1 + 2;
  while (pos < out->size() - 1) {
    const char op = (*out)[pos];
    if (op == '(') {
      ++pos;
    } else if (op == 'K') {
      pos += 2;
    } else if (op == 'u') {
      ++setitems;
      ++pos;
    } else if (op == 's') {
      ++setitem;
      ++pos;
    } else {
      ADD_FAILURE() << "unexpected opcode " << int(op) << " at " << pos;
      break;
    }
  }
  return {setitems, setitem};
}

TEST(PickleProtocol2Test, BatchesDictItemsByOneThousand_PytorchSemantics5) {
  // OrderedDict (CPython's batch_dict): a lone item or a lone last item uses SETITEM.
  EXPECT_EQ(Batches(true, 0), std::make_pair(0, 0));
  EXPECT_EQ(Batches(true, 1), std::make_pair(0, 1));
  EXPECT_EQ(Batches(true, 2), std::make_pair(1, 0));
  EXPECT_EQ(Batches(true, 1000), std::make_pair(1, 0));
  EXPECT_EQ(Batches(true, 1001), std::make_pair(1, 1));
  EXPECT_EQ(Batches(true, 2500), std::make_pair(3, 0));
  // dict (batch_dict_exact): one item uses SETITEM; a full last batch is followed by an
  // empty one.
  EXPECT_EQ(Batches(false, 1), std::make_pair(0, 1));
  EXPECT_EQ(Batches(false, 2), std::make_pair(1, 0));
  EXPECT_EQ(Batches(false, 1000), std::make_pair(2, 0));
  EXPECT_EQ(Batches(false, 1001), std::make_pair(2, 0));
}

TEST(PickleProtocol2Test, RoundTripsThroughTheUnpickler_PytorchSemantics5) {
  PickleGraph graph;
  PickleValue* root = graph.Dict(true);
  PickleValue* list = graph.Add(PickleKind::kList);
  list->items = {graph.None(), graph.Bool(true), graph.Float(-2.25), graph.String("x")};
  root->entries.emplace_back(graph.String("list"), list);
  root->entries.emplace_back(
      graph.String("call"),
      graph.Call(graph.Global("torch._utils", "_rebuild_parameter"), graph.Tuple({})));
  PickleValue* state = graph.Dict(false);
  state->entries.emplace_back(graph.String("_metadata"), graph.Dict(true));
  root->state = state;
  absl::StatusOr<std::string> out = PickleProtocol2(*root);
  ASSERT_TRUE(out.ok()) << out.status();
  absl::StatusOr<PickleGraph> back = Unpickle(AsSpan(*out));
  ASSERT_TRUE(back.ok()) << back.status();
  const PickleValue& dict = *back->root();
  ASSERT_TRUE(dict.ordered);
  ASSERT_EQ(dict.entries.size(), 2u);
  EXPECT_EQ(dict.entries[0].second->items[2]->float_value, -2.25);
  EXPECT_TRUE(dict.entries[1].second->items[0]->is_global("torch._utils", "_rebuild_parameter"));
  ASSERT_NE(dict.state, nullptr);
  EXPECT_EQ(dict.state->entries[0].first->text, "_metadata");
  // Writing what was read gives the same bytes.
  absl::StatusOr<std::string> again = PickleProtocol2(*back->root());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *out);
}

TEST(PickleProtocol2Test, RefusesValuesAStateDictNeverHolds_PytorchSemantics5) {
  PickleGraph graph;
  PickleValue* bytes = graph.Add(PickleKind::kBytes);
  ExpectInvalid(PickleProtocol2(*graph.Tuple({bytes})).status(), "bytes values are not written");
  PickleValue* list = graph.Add(PickleKind::kList);
  PickleValue* outer = list;
  for (int i = 0; i < 300; ++i) {
    PickleValue* inner = graph.Add(PickleKind::kList);
    outer->items.push_back(inner);
    outer = inner;
  }
  ExpectInvalid(PickleProtocol2(*list).status(), "deeper than 200");
}

}  // namespace
}  // namespace paramd::io
