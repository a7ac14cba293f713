// The paramd C++ client: a connection to one paramd daemon (Client) and a handle on one of
// its models (RemoteModel), covering the Models, Parameters, Checkpoints and Inference
// services of proto/paramd/v1 plus the standard health check.
//
// Errors: every call returns absl::Status / absl::StatusOr. A status the server sent comes
// back with the same code and message (NOT_FOUND for a missing model or key, ABORTED when
// `if_version` no longer matches, ...). A stream that breaks the wire contract (no start
// frame, chunks out of order, a tensor that ends short or runs past its size) gives
// DATA_LOSS; arguments the client can check itself give INVALID_ARGUMENT before anything is
// sent. Nothing here throws. An ABORTED from a version mismatch carries the model's current
// version as the server sent it (trailing metadata `paramd-current-version`):
// `CurrentVersionOf(status)` reads it, nullopt when the server did not send one.
//
// Ownership and threading: a Client owns its gRPC channel and may be used from many threads
// at once. A RemoteModel is a cheap value (a borrowed Client pointer and a model name); the
// Client must outlive every RemoteModel made from it. Progress callbacks run on the calling
// thread, inside the call.
//
// Versions: every read reports the one model version it saw; every write returns the new
// model version. `if_version` = 0 makes a write unconditional; otherwise the write fails
// with ABORTED unless the model is still at that version.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/version_conflict.h"
#include "paramd/tensor.h"

namespace paramd::client {

using ::paramd::CurrentVersionOf;

// Bytes per TensorChunk the client sends; the server's chunk size too (LIMITS.md).
inline constexpr size_t kChunkBytes = size_t{1} << 20;

// Called as data moves: bytes done so far and bytes in total. For writes the total is
// known from the start. For streamed reads it is the size of the tensors announced so far,
// so it grows as the stream goes on (exact from the start for GetTensor).
using ProgressCallback = std::function<void(uint64_t done, uint64_t total)>;

// [start, stop) per leading dimension; later dimensions are taken whole. Matches
// paramd.v1.Region.
using Region = std::vector<std::pair<int64_t, int64_t>>;

struct ConnectOptions {
  // Deadline of each unary call (describe, list, tie, mode, ...). Zero: none.
  std::chrono::milliseconds unary_deadline{std::chrono::seconds(30)};
  // Deadline of each streaming call (state_dict, get/set tensors, load_state_dict). Zero:
  // none, since large transfers take as long as they take.
  std::chrono::milliseconds stream_deadline{0};
  // HTTP/2 keepalive (docs/wire.md, "Keepalive"): while a call is in flight the client pings
  // the server after `keepalive_time` without hearing from it, and closes the connection
  // when a ping goes unanswered for `keepalive_timeout`: every call on it then ends with
  // UNAVAILABLE, so a frozen or vanished server cannot hang a call that has no deadline (a
  // blocked write included). paramd accepts pings every --keepalive-min-interval (10 s by
  // default) or slower; faster ones get the connection closed (GOAWAY too_many_pings).
  // Zero keepalive_time: no pings.
  std::chrono::milliseconds keepalive_time{std::chrono::seconds(30)};
  std::chrono::milliseconds keepalive_timeout{std::chrono::seconds(10)};
  // Bytes of one call's incoming data gRPC may buffer before the server has to wait (the
  // HTTP/2 stream window). 0: gRPC sizes its windows by the bandwidth-delay product it
  // measures, which can buffer tens of MiB while the caller consumes slower than the server
  // sends (a state_dict streamed to disk); a value fixes the window instead, bounding that
  // memory (paramctl uses 4 MiB).
  size_t receive_window_bytes = 0;
  // A bearer token sent with every call (`authorization: Bearer TOKEN`), for a daemon
  // started with --auth-tokens; empty: none.
  std::string token;
  // TLS, for a daemon started with --tls-cert: on when `tls` is set or any PEM below is.
  bool tls = false;
  // PEM text (not paths). The CA that signed the daemon's certificate (empty: the system's
  // roots); for mutual TLS (--tls-client-ca) the client's certificate chain and its key.
  std::string tls_root_ca_pem;
  std::string tls_cert_pem;
  std::string tls_key_pem;
};

// paramd.v1.ModelInfo.
struct ModelInfo {
  std::string name;
  uint64_t version = 0;
  std::string device;
  bool training = true;
  // The root module's class name.
  std::string type;
  // repr(model), exactly as PyTorch prints it. DescribeModel returns it whole; the other
  // calls may return only its first 1 MiB, and then set repr_truncated (GetRepr has it all).
  std::string repr;
  bool repr_truncated = false;
  // len(state_dict()), len(list(parameters())), their numel, bytes held (each storage once).
  uint64_t state_dict_entries = 0;
  uint64_t parameter_count = 0;
  uint64_t parameter_numel = 0;
  uint64_t nbytes = 0;
};

// paramd.v1.GetSpecResponse: the spec of a model's tree as it stands, and its version.
struct ModelSpec {
  std::string spec_json;
  uint64_t version = 0;
};

struct NamedTensor {
  std::string name;
  HostTensor tensor;
};

struct StateDictOptions {
  // Prepended to every key, as state_dict(prefix=...) does.
  std::string prefix;
  // Floating-point tensors travel (and arrive) in this dtype; others as they are.
  std::optional<DType> wire_dtype;
  // Headers only: every entry's metadata with empty `data`.
  bool metadata_only = false;
  ProgressCallback progress;
};

struct StateDictResult {
  // The model version every entry belongs to.
  uint64_t version = 0;
  // In state_dict order; tied and shared entries appear under every name. The first name of
  // a tensor object lists the others in `tensor.tied_with`; each later name lists the first.
  std::vector<NamedTensor> entries;
  // state_dict()._metadata: module path (no trailing dot) -> Module._version.
  std::map<std::string, int> metadata;
  // The same entries in PyTorch's order (state_dict()._metadata's: module paths in
  // pre-order, a shared module once per path).
  std::vector<std::pair<std::string, int>> ordered_metadata;
};

// named_parameters / named_buffers options, with PyTorch's defaults.
struct NamedOptions {
  std::string prefix;
  bool recurse = true;
  bool remove_duplicate = true;
  // false: headers only (empty `data`).
  bool with_data = false;
  std::optional<DType> wire_dtype;
  ProgressCallback progress;
};

struct NamedTensors {
  uint64_t version = 0;
  std::vector<NamedTensor> entries;
};

// One entry of named_modules().
struct ModuleEntry {
  // Dotted path; "" (or the prefix) for the root.
  std::string name;
  std::string type;
  // Own parameter and buffer names (a parameter slot may hold None).
  std::vector<std::string> parameters;
  std::vector<std::string> buffers;
  // Other paths of the same module object (shared modules).
  std::vector<std::string> shared_with;
};

struct NamedModulesResult {
  uint64_t version = 0;
  std::vector<ModuleEntry> modules;
};

struct GetTensorOptions {
  std::optional<DType> wire_dtype;
  ProgressCallback progress;
};

struct TensorWrite {
  std::string name;
  // Its dtype may differ from the destination's: the server copies as `copy_` does.
  HostTensor tensor;
  // Write only this region; `tensor` then has the region's shape, or is one element that
  // fills it.
  std::optional<Region> region;
};

struct SetTensorsOptions {
  // 0: any version.
  uint64_t if_version = 0;
  // Commit each tensor as its own version as soon as it has arrived (PyTorch's in-place
  // `copy_` one tensor after another) instead of the whole batch at once: the daemon then
  // needs memory for the model plus the largest tensor rather than the whole batch. Readers
  // may see some tensors new and others old meanwhile; a failure leaves the tensors before it
  // written, and its message says how many and at which version (docs/wire.md).
  bool commit_each_tensor = false;
  ProgressCallback progress;
};

struct LoadOptions {
  // PyTorch's load_state_dict defaults.
  bool strict = true;
  bool assign = false;
  // state_dict._metadata of the loaded dict, when it carries one.
  std::optional<std::map<std::string, int>> metadata;
  ProgressCallback progress;
};

struct LoadResult {
  uint64_t version = 0;
  // As PyTorch's _IncompatibleKeys.
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

// --- checkpoints (paramd.v1.Checkpoints) ---

enum class CheckpointFormat {
  // A save: safetensors for a `.safetensors` path, torch's format for any other (as
  // torch.save). A listed file: neither format by its contents.
  kFromSuffix,
  kSafetensors,
  kTorch,
};

struct SaveCheckpointOptions {
  CheckpointFormat format = CheckpointFormat::kFromSuffix;
  // PyTorch files: Parameters saved as torch.nn.Parameter (state_dict(keep_vars=True)).
  bool keep_vars = false;
  // Set: a training checkpoint, torch.save({"model": ..., "optimizer": ...}) with this
  // optimizer of the model (PyTorch files only).
  std::string optimizer;
  // Have the server hash the file (SHA-256) as it writes it, into the result's sha256. It
  // costs a large save about a third of its speed (SHA-256 is slower than a fast disk);
  // Download checks the digest of what it receives either way.
  bool sha256 = false;
};

struct SaveCheckpointResult {
  std::string path;
  CheckpointFormat format = CheckpointFormat::kFromSuffix;
  // The model version the file holds.
  uint64_t version = 0;
  uint64_t size = 0;
  std::string sha256;  // hex; empty unless the options asked for it
};

struct LoadCheckpointOptions {
  // load_state_dict's options, with PyTorch's defaults.
  bool strict = true;
  bool assign = false;
  // torch.load's map_location: one location for every tensor ("cpu", "cuda:0"), or a
  // mapping of saved locations (unmapped ones kept). Empty: the saved locations.
  std::string map_location;
  std::map<std::string, std::string> location_map;
  // Creating a model that does not exist: this spec instead of the one the file carries,
  // and the device ("cpu" when empty).
  std::string spec_json;
  std::string device;
  uint64_t if_version = 0;
  // Set: the file is a training checkpoint; its "model" loads into the existing model and
  // its "optimizer" into this existing optimizer, all or nothing.
  std::string optimizer;
};

struct LoadCheckpointResult {
  uint64_t version = 0;
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
  bool created = false;
  CheckpointFormat format = CheckpointFormat::kFromSuffix;
};

struct CheckpointFile {
  std::string path;
  uint64_t size = 0;
  int64_t modified_unix = 0;
  // From the file's contents, whatever its name; kFromSuffix: neither format.
  CheckpointFormat format = CheckpointFormat::kFromSuffix;
};

// paramd.v1.Training's optimizers (docs/training.md), as ListOptimizers describes them.
struct OptimizerInfo {
  std::string name;
  std::string model;
  std::string kind;  // "SGD", "Adam", "AdamW"
  std::string mode;  // "manual", "asynchronous"
  uint64_t max_staleness = 0;
  int64_t param_groups = 0;
  int64_t parameters = 0;
  int64_t with_gradient = 0;  // parameters whose .grad is not None
  uint64_t steps = 0;         // the optimizer's round
  uint64_t state_bytes = 0;
  uint64_t model_version = 0;
};

// A hyperparameter value with its Python type, as torch keeps it in a param group.
struct HyperValue {
  enum class Type { kNone, kBool, kInt, kFloat, kTuple };
  Type type = Type::kNone;
  bool bool_value = false;
  int64_t int_value = 0;
  double float_value = 0;
  std::vector<double> tuple;
};

// optimizer.state_dict() (GetOptimizerState): torch's layout, `state` keyed by
// "<parameter index>.<key>" ("0.exp_avg", "3.step") in the order the server sent them.
struct OptimizerState {
  std::string optimizer;
  std::string kind;
  std::string model;
  struct Group {
    std::vector<int64_t> params;
    std::vector<std::string> param_names;
    std::vector<std::pair<std::string, HyperValue>> hyperparameters;  // torch's order
  };
  std::vector<Group> param_groups;
  std::vector<std::pair<std::string, HostTensor>> state;
};

struct TransferResult {
  uint64_t size = 0;
  std::string sha256;  // hex, of the whole file
  // Bytes that were already there and not sent again (a resumed transfer).
  uint64_t resumed_from = 0;
};

// --- inference (paramd.v1.Inference) ---

enum class ForwardMode {
  kModel,  // the model's own train/eval mode
  kTrain,  // model.train() for this call only
  kEval,   // model.eval() for this call only
};

struct ForwardOptions {
  ForwardMode mode = ForwardMode::kModel;
  // Seeds a training-mode forward's dropout masks: the same seed, version and inputs give
  // the same output.
  uint64_t seed = 0;
  // 0: the current version; otherwise that version or ABORTED.
  uint64_t if_version = 0;
  // Floating-point outputs travel (and arrive) in this dtype; unset: as computed.
  std::optional<DType> wire_dtype;
};

struct ForwardResult {
  // The model version whose parameters and buffers computed the outputs.
  uint64_t version = 0;
  // A training-mode forward that updated BatchNorm running statistics committed them as
  // this version, always `version` + 1: no other write fell between. 0 when nothing was
  // updated.
  uint64_t updated_version = 0;
  // The mode the forward ran in.
  bool training = false;
  // The root module's output, named "output".
  std::vector<NamedTensor> outputs;
};

// --- streamed transfers: tensors chunk by chunk, never whole in the client ---

// Takes a read's tensors as they stream in (RemoteModel::StateDictTo, GetTensorTo), so that
// the client holds one chunk at a time instead of whole tensors: for writing them straight to
// a file.
// Its calls come in order on the calling thread: per tensor BeginTensor, TensorData until
// the tensor's bytes are all there, then EndTensor. An error it returns cancels the read
// and is the read's result.
class TensorConsumer {
 public:
  virtual ~TensorConsumer() = default;
  // `meta` has every field of the tensor but `data` (empty); `meta.nbytes()` bytes follow.
  virtual absl::Status BeginTensor(const std::string& name, const HostTensor& meta) = 0;
  // The tensor's next bytes, in order. `bytes` is valid during the call only.
  virtual absl::Status TensorData(absl::string_view bytes) = 0;
  // The tensor's last byte has arrived.
  virtual absl::Status EndTensor() = 0;
};

// Supplies a write's tensors chunk by chunk as they are sent (RemoteModel::LoadStateDictFrom,
// SetTensorFrom), so that the client holds a few chunks instead of whole tensors: for sending
// straight from a file.
class TensorProducer {
 public:
  virtual ~TensorProducer() = default;
  // Every tensor's name, dtype and shape (`data` empty), known before any byte is sent: the
  // daemon sets the write's memory aside from them.
  virtual const std::vector<NamedTensor>& tensors() const = 0;
  // Fills all of `out` with the bytes [offset, offset + out.size()) of tensors()[index].
  // Called in order: tensor after tensor, each from offset 0 to its end in consecutive
  // pieces of at most kChunkBytes. An error ends the write unfinished: the call is
  // cancelled, so the daemon commits nothing, and the error is the write's result. A
  // producer that checks its source as it goes (a CRC) can so refuse a tensor's last piece
  // before the daemon has all of it.
  virtual absl::Status Read(size_t index, uint64_t offset, absl::Span<char> out) = 0;
  // Read's `size` bytes without a copy, where the producer holds them in memory that stays
  // valid while it lives (a mapped file): their address, lent to gRPC as they are; or
  // nullptr, and Read is called for that piece instead. Called under Read's rules, in place
  // of Read, and with Read's checks and errors. The default lends nothing.
  virtual absl::StatusOr<const char*> Lend(size_t index, uint64_t offset, size_t size) {
    (void)index;
    (void)offset;
    (void)size;
    return nullptr;
  }
};

class Client;

// A handle on the model `name` of a Client. Holds no server state: making one is free and
// does not check that the model exists.
class RemoteModel {
 public:
  RemoteModel(Client* client, std::string name) : client_(client), name_(std::move(name)) {}

  const std::string& name() const { return name_; }

  // --- reads: each sees one model version from first byte to last ---

  // model.state_dict(prefix=...), streamed.
  absl::StatusOr<StateDictResult> StateDict(const StateDictOptions& options = {}) const;
  // The same into `result`, whose tensors' memory is reused for the entries of the same
  // name: a worker pulling weights again and again touches no fresh memory. On error
  // `result` is left empty.
  absl::Status StateDictInto(StateDictResult& result, const StateDictOptions& options = {}) const;
  // The same, handing each tensor to `consumer` as its chunks arrive (metadata_only is
  // ignored); returns the model version every tensor belongs to.
  absl::StatusOr<uint64_t> StateDictTo(TensorConsumer& consumer,
                                       const StateDictOptions& options = {}) const;
  // model.named_parameters(prefix, recurse, remove_duplicate) / named_buffers(...).
  absl::StatusOr<NamedTensors> NamedParameters(const NamedOptions& options = {}) const;
  absl::StatusOr<NamedTensors> NamedBuffers(const NamedOptions& options = {}) const;
  // model.named_modules(prefix=..., remove_duplicate=...).
  absl::StatusOr<NamedModulesResult> NamedModules(const std::string& prefix = "",
                                                  bool remove_duplicate = true) const;
  // One parameter or buffer by dotted path, or a region of it (the result then has the
  // region's shape).
  absl::StatusOr<HostTensor> GetTensor(const std::string& name,
                                       const std::optional<Region>& region = std::nullopt,
                                       const GetTensorOptions& options = {}) const;
  // The same (region and wire_dtype alike), handing the tensor to `consumer` as its chunks
  // arrive; returns the model version it belongs to. A consumer error cancels the read.
  absl::StatusOr<uint64_t> GetTensorTo(const std::string& name, TensorConsumer& consumer,
                                       const std::optional<Region>& region = std::nullopt,
                                       const GetTensorOptions& options = {}) const;

  // --- writes: each returns the new model version, and is all-or-nothing ---

  absl::StatusOr<uint64_t> SetTensor(const std::string& name, const HostTensor& tensor,
                                     const std::optional<Region>& region = std::nullopt,
                                     uint64_t if_version = 0,
                                     const ProgressCallback& progress = {}) const;
  // The same with the tensor's bytes read from `producer` (which has exactly one tensor; its
  // name is not sent, `name` is) chunk by chunk as they are sent: the client holds a few
  // chunks, however large the tensor. A producer error cancels the write, which then
  // changes nothing, and is the result.
  absl::StatusOr<uint64_t> SetTensorFrom(const std::string& name, TensorProducer& producer,
                                         const std::optional<Region>& region = std::nullopt,
                                         uint64_t if_version = 0,
                                         const ProgressCallback& progress = {}) const;
  // An atomic batch.
  absl::StatusOr<uint64_t> SetTensors(const std::vector<TensorWrite>& writes,
                                      uint64_t if_version = 0,
                                      const ProgressCallback& progress = {}) const;
  // The batch, atomic or tensor by tensor (SetTensorsOptions::commit_each_tensor); returns
  // the version of the last tensor written.
  absl::StatusOr<uint64_t> SetTensors(const std::vector<TensorWrite>& writes,
                                      const SetTensorsOptions& options) const;
  // module.register_parameter(name, Parameter(tensor, requires_grad)) on the module at
  // `module_path` ("" = root); nullopt registers None.
  absl::StatusOr<uint64_t> RegisterParameter(const std::string& module_path,
                                             const std::string& name,
                                             const std::optional<HostTensor>& tensor,
                                             uint64_t if_version = 0, bool requires_grad = true,
                                             const ProgressCallback& progress = {}) const;
  // module.register_buffer(name, tensor, persistent); nullopt registers None.
  absl::StatusOr<uint64_t> RegisterBuffer(const std::string& module_path, const std::string& name,
                                          const std::optional<HostTensor>& tensor,
                                          bool persistent = true, uint64_t if_version = 0,
                                          const ProgressCallback& progress = {}) const;
  // `name` ("lm_head.weight") becomes the Parameter object `target` ("embed.weight") holds.
  absl::StatusOr<uint64_t> TieParameters(const std::string& name, const std::string& target,
                                         uint64_t if_version = 0) const;
  // model.load_state_dict(state_dict, strict, assign), atomically: a failed load (strict
  // key mismatch, size mismatch) changes nothing.
  absl::StatusOr<LoadResult> LoadStateDict(const std::vector<NamedTensor>& state_dict,
                                           const LoadOptions& options = {},
                                           uint64_t if_version = 0) const;
  // The same with the tensors' bytes read from `producer` chunk by chunk as they are sent;
  // the client holds a few chunks, however large the tensors. A producer error cancels the
  // load, which then changes nothing.
  absl::StatusOr<LoadResult> LoadStateDictFrom(TensorProducer& producer,
                                               const LoadOptions& options = {},
                                               uint64_t if_version = 0) const;

  // model.train() / model.eval().
  absl::StatusOr<ModelInfo> SetMode(bool training, uint64_t if_version = 0) const;
  // model.to(device): "cpu", "cuda", "cuda:N".
  absl::StatusOr<ModelInfo> MoveModel(const std::string& device, uint64_t if_version = 0) const;
  absl::StatusOr<ModelInfo> Describe() const;

  // --- inference ---

  // model(input, **named) on the server. One input must be named "input" (the positional
  // argument); other names are values a custom container's forward program reads. Inputs
  // of any size travel in chunks. INVALID_ARGUMENT naming the module and the shape it
  // expected when the model rejects an input, as PyTorch does; NOT_FOUND for an unknown
  // model; ABORTED for `if_version` (or when writers kept a training-mode forward from
  // committing its BatchNorm statistics, which is then safe to retry).
  absl::StatusOr<ForwardResult> Forward(const std::vector<NamedTensor>& inputs,
                                        const ForwardOptions& options = {}) const;
  // The same with the positional input alone.
  absl::StatusOr<ForwardResult> Forward(const HostTensor& input,
                                        const ForwardOptions& options = {}) const;

 private:
  Client* client_;  // not owned
  std::string name_;
};

class Client {
 public:
  // Makes a channel to `address` ("host:port", or any gRPC target). The channel connects
  // lazily: an unreachable server shows as UNAVAILABLE on the first call, not here.
  // INVALID_ARGUMENT for an empty address.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& address,
                                                         const ConnectOptions& options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& address() const;

  // grpc.health.v1.Health/Check for the whole server (service ""). OK when SERVING;
  // UNAVAILABLE (naming the reported status) otherwise, or the call's own error.
  absl::Status Health() const;

  // A spec is JSON text (docs/specs.md). Device "cpu", "cuda" or "cuda:N".
  absl::StatusOr<ModelInfo> CreateModel(const std::string& name, const std::string& spec_json,
                                        const std::string& device = "cpu", uint64_t seed = 0) const;
  absl::Status DeleteModel(const std::string& name, uint64_t if_version = 0) const;
  // Every model, in name order, through all of ListModels' pages.
  absl::StatusOr<std::vector<ModelInfo>> ListModels() const;
  // With the whole repr (fetched with GetRepr when the ModelInfo's was cut).
  absl::StatusOr<ModelInfo> DescribeModel(const std::string& name) const;
  // repr(model) whole, however long, of the model's current version.
  absl::StatusOr<std::string> GetRepr(const std::string& name) const;
  // Replaces a cut `info.repr` with the whole text (GetRepr); nothing to do when it is whole.
  absl::Status CompleteRepr(ModelInfo& info) const;
  // The spec (JSON text) of the model's tree as it stands now, ties as `tie` and shared
  // modules as `ref`: CreateModel with it builds the same tree. NOT_FOUND for an unknown
  // model.
  absl::StatusOr<ModelSpec> GetSpec(const std::string& name) const;

  // Saves model `model` to `path` in the daemon's checkpoint directory, atomically, from
  // one model version.
  absl::StatusOr<SaveCheckpointResult> SaveCheckpoint(
      const std::string& model, const std::string& path,
      const SaveCheckpointOptions& options = {}) const;
  // Loads `path` into `model` (load_state_dict), or creates `model` from it when it does
  // not exist. A strict load with mismatched keys fails with PyTorch's message and
  // changes nothing.
  absl::StatusOr<LoadCheckpointResult> LoadCheckpoint(
      const std::string& model, const std::string& path,
      const LoadCheckpointOptions& options = {}) const;
  absl::StatusOr<std::vector<CheckpointFile>> ListCheckpoints() const;
  // Sends the local file `local_path` to `remote_path` in the checkpoint directory. An
  // earlier upload of the same path that broke off is resumed where it stopped. The file
  // appears on the server only once all of it arrived with the right SHA-256.
  absl::StatusOr<TransferResult> Upload(const std::string& local_path,
                                        const std::string& remote_path,
                                        const ProgressCallback& progress = {}) const;
  // Fetches `remote_path` into `local_path`, through `local_path.part`: a download that
  // broke off resumes from the part's size. The file is renamed into place only once its
  // SHA-256 matches the server's (DATA_LOSS otherwise, and the part is removed). A symlink
  // is followed (the part is renamed over its target); a device, a FIFO or /dev/stdout is
  // written straight into from byte 0 with no part, and the digest checked as the bytes
  // pass. INVALID_ARGUMENT, before any request, for a directory, a path ending in '/' or
  // an empty one.
  absl::StatusOr<TransferResult> Download(const std::string& remote_path,
                                          const std::string& local_path,
                                          const ProgressCallback& progress = {}) const;
  // Snapshots the named models (every model when empty) into the daemon's data directory;
  // returns each model's snapshotted version.
  absl::StatusOr<std::vector<std::pair<std::string, uint64_t>>> Snapshot(
      const std::vector<std::string>& models = {}) const;

  // The optimizers (of `model` when not empty), by name.
  absl::StatusOr<std::vector<OptimizerInfo>> ListOptimizers(const std::string& model = "") const;
  // optimizer.state_dict() of optimizer `name`, tensors included. NOT_FOUND for an unknown
  // optimizer.
  absl::StatusOr<OptimizerState> GetOptimizerState(const std::string& name) const;

  // A handle on model `name`; see RemoteModel.
  RemoteModel Model(const std::string& name) { return RemoteModel(this, name); }

 private:
  friend class RemoteModel;
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace paramd::client
