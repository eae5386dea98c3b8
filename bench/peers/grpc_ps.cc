// grpc_ps: the minimal parameter server of zmq_ps.cc, over gRPC instead of ZeroMQ (gRPC's
// generic API: raw bytes, no Protocol Buffers), measured by bench_transport beside our shard,
// iperf3 and zmq_ps: what gRPC itself allows a parameter server that sends whole messages on this
// machine. One float32 model as one message each way, the weights and the gradient sent from
// their own memory without copying (static slices), the worker copying the pulled weights into
// its model's buffer, the server applying w -= lr * g as it reads the gradient's slices. No NaN
// check, no versions, no sharding, no parts, no protocol. gRPC's defaults otherwise (HTTP/2
// framing and flow control, its callback executor), message size limits lifted, and glibc's
// malloc told to keep freed memory as our shard and learner do (server/memory_reuse.cc): without
// it gRPC's per-message buffers fault in fresh pages every round trip (~650 faults per 4 MB round
// trip measured, at half the speed).
//
//   grpc_ps server BYTES             prints `READY 127.0.0.1:PORT`, serves one worker
//   grpc_ps worker ENDPOINT BYTES SECONDS
//                                    as zmq_ps: prints the RESULT line of ps_peer::RunWorker
//
// Methods (unary, one message each way): /ps/P -> the weights; /ps/G with BYTES of gradient ->
// empty; /ps/T (start of the timed loop) -> empty; /ps/Q -> the server's CPU seconds and minor
// page faults since T, as text, and the server exits.
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <malloc.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ps_peer.h"

namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "grpc_ps: %s\n", what.c_str());
  std::exit(1);
}

grpc::ByteBuffer Aliasing(const void* data, size_t bytes) {
  grpc::Slice slice(data, bytes, grpc::Slice::STATIC_SLICE);
  return grpc::ByteBuffer(&slice, 1);
}

grpc::ByteBuffer Text(const std::string& text) {
  grpc::Slice slice(text.data(), text.size());  // copied
  return grpc::ByteBuffer(&slice, 1);
}

class Service final : public grpc::CallbackGenericService {
 public:
  explicit Service(size_t bytes) : bytes_(bytes), weights_(bytes / sizeof(float), 0.01f) {}

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    return new Call(this, ctx->method());
  }

  void WaitForQuit() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return quit_; });
  }

 private:
  // One unary call: read the request, answer, finish.
  class Call final : public grpc::ServerGenericBidiReactor {
   public:
    Call(Service* service, std::string method) : service_(service), method_(std::move(method)) {
      StartRead(&request_);
    }

    void OnReadDone(bool ok) override {
      if (!ok) return Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request"));
      grpc::Status status = service_->Handle(method_, request_, &response_);
      if (!status.ok()) return Finish(status);
      StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    }

    void OnDone() override {
      if (method_ == "/ps/Q") service_->Quit();
      delete this;
    }

   private:
    Service* service_;
    std::string method_;
    grpc::ByteBuffer request_, response_;
  };

  grpc::Status Handle(const std::string& method, const grpc::ByteBuffer& request,
                      grpc::ByteBuffer* response) {
    if (method == "/ps/P") {
      // The weights themselves, not a copy: the worker sends its next push only after it has
      // read all of them.
      *response = Aliasing(weights_.data(), bytes_);
    } else if (method == "/ps/G") {
      if (request.Length() != bytes_) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a gradient of the wrong size");
      }
      std::vector<grpc::Slice> slices;  // references to the received bytes, not copies
      if (!request.Dump(&slices).ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "dump");
      ps_peer::GradientApplier apply(weights_, 1e-3f);
      for (const grpc::Slice& s : slices) {
        apply.Feed(reinterpret_cast<const char*>(s.begin()), s.size());
      }
      *response = Text("");
    } else if (method == "/ps/T") {
      start_ = ps_peer::Now();
      *response = Text("");
    } else if (method == "/ps/Q") {
      *response = Text(ps_peer::UsageSince(start_));
    } else {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, method);
    }
    return grpc::Status::OK;
  }

  void Quit() {
    std::lock_guard lock(mu_);
    quit_ = true;
    cv_.notify_all();
  }

  const size_t bytes_;
  std::vector<float> weights_;
  ps_peer::Usage start_ = ps_peer::Now();
  std::mutex mu_;
  std::condition_variable cv_;
  bool quit_ = false;
};

int Server(size_t bytes) {
  Service service(bytes);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) Die("cannot listen on 127.0.0.1");
  std::printf("READY 127.0.0.1:%d\n", port);
  std::fflush(stdout);
  service.WaitForQuit();
  server->Shutdown();
  return 0;
}

int Worker(const char* endpoint, size_t bytes, double seconds) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  grpc::GenericStub stub(
      grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args));
  grpc::CompletionQueue cq;
  // One blocking unary call.
  auto call = [&](const char* method, const grpc::ByteBuffer& request) {
    grpc::ClientContext context;
    grpc::ByteBuffer response;
    grpc::Status status;
    std::unique_ptr<grpc::GenericClientAsyncResponseReader> rpc =
        stub.PrepareUnaryCall(&context, method, request, &cq);
    rpc->StartCall();
    rpc->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    if (!cq.Next(&tag, &ok) || !ok || !status.ok()) {
      Die(std::string(method) + ": " + status.error_message());
    }
    return response;
  };
  std::vector<float> weights(bytes / sizeof(float)), grads(bytes / sizeof(float));
  for (size_t i = 0; i < grads.size(); ++i) grads[i] = 1e-4f * static_cast<float>(i % 7);
  const grpc::ByteBuffer empty = Text("");
  auto pull = [&] {
    grpc::ByteBuffer reply = call("/ps/P", empty);
    if (reply.Length() != bytes) Die("weights of the wrong size");
    std::vector<grpc::Slice> slices;
    if (!reply.Dump(&slices).ok()) Die("dump");
    char* out = reinterpret_cast<char*>(weights.data());
    for (const grpc::Slice& s : slices) {  // into the model's buffer
      std::memcpy(out, s.begin(), s.size());
      out += s.size();
    }
  };
  auto push = [&] { call("/ps/G", Aliasing(grads.data(), bytes)); };  // the gradient's own memory
  auto request = [&](const char* kind) {
    grpc::ByteBuffer reply = call(kind[0] == 'T' ? "/ps/T" : "/ps/Q", empty);
    grpc::Slice all;
    if (!reply.DumpToSingleSlice(&all).ok()) return std::string();
    return std::string(reinterpret_cast<const char*>(all.begin()), all.size());
  };
  return ps_peer::RunWorker("grpc_ps", bytes, seconds, pull, push, request);
}

}  // namespace

int main(int argc, char** argv) {
  // As server/memory_reuse.cc does for `orrery server` and the learner.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  mallopt(M_ARENA_MAX, 4);
  return ps_peer::Main(argc, argv, "grpc_ps", Server, Worker);
}
