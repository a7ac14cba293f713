// The raw gRPC service the wire benchmarks measure against (bench/raw_server.h).
#include "bench/raw_server.h"

#include <unistd.h>

#include <cstdio>

#include "bench/bench_util.h"
#include "grpcpp/grpcpp.h"
#include "paramd/bench/raw.grpc.pb.h"

namespace paramd::bench {
namespace {

class RawService final : public Raw::Service {
 public:
  grpc::Status Pull(grpc::ServerContext*, const PullRequest* request,
                    grpc::ServerWriter<Blob>* writer) override {
    Blob blob;
    blob.mutable_data()->assign(request->chunk_bytes(), '\x5a');
    for (uint64_t sent = 0; sent < request->total_bytes(); sent += request->chunk_bytes()) {
      if (!writer->Write(blob)) break;
    }
    return grpc::Status::OK;
  }
  grpc::Status Push(grpc::ServerContext*, grpc::ServerReader<Blob>* reader,
                    PushReply* reply) override {
    Blob blob;
    uint64_t received = 0;
    while (reader->Read(&blob)) received += blob.data().size();
    reply->set_received_bytes(received);
    return grpc::Status::OK;
  }
  grpc::Status Echo(grpc::ServerContext*, const Blob* request, Blob* reply) override {
    *reply = *request;
    return grpc::Status::OK;
  }
};

}  // namespace

pid_t StartRawServer(int* port) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    PinTo(1);
    RawService service;
    grpc::ServerBuilder builder;
    int bound = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &bound);
    builder.RegisterService(&service);
    builder.SetMaxReceiveMessageSize(64 << 20);
    auto server = builder.BuildAndStart();
    if (write(fds[1], &bound, sizeof(bound)) != sizeof(bound)) _exit(1);
    server->Wait();
    _exit(0);
  }
  close(fds[1]);
  const bool got = pid > 0 && read(fds[0], port, sizeof(*port)) == sizeof(*port);
  close(fds[0]);
  return got ? pid : -1;
}

}  // namespace paramd::bench
