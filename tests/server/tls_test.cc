// TLS and job tokens on the shards' channels, with certificates made by scripts/make-test-certs.sh:
// the right CA (and, for mutual TLS, a client certificate) and token work; plaintext, a stranger's
// CA, a missing client certificate or a wrong token are refused.
#include "server/tls.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/client.h"
#include "server/shard_server.h"

namespace orrery::server {
namespace {

using ::testing::HasSubstr;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(absl::StrCat(std::filesystem::temp_directory_path().string(),
                                        "/orrery-tls-", getpid()));
    const std::string cmd = absl::StrCat(ORRERY_SOURCE_DIR, "/scripts/make-test-certs.sh ", *dir_,
                                         " 1 > /dev/null");
    made_ = std::system(cmd.c_str()) == 0;
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override {
    if (!made_) GTEST_SKIP() << "scripts/make-test-certs.sh failed (is openssl installed?)";
  }
  static std::string File(const std::string& name) { return *dir_ + "/" + name; }

  void Serve(bool mutual) {
    ServerOptions o;
    o.job_id = "tls-job";
    o.token = "right-token";
    o.tls_cert = File("node.pem");
    o.tls_key = File("node.key");
    if (mutual) o.tls_client_ca = File("ca.pem");
    auto server = ShardServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  absl::Status Try(TlsFiles tls, const std::string& token = "right-token") {
    ClientOptions o;
    o.endpoints = {server_->address()};
    o.job_id = "tls-job";
    o.token = token;
    o.tensors = {{"w", 100}};
    o.rpc_timeout = absl::Seconds(5);
    o.retry_budget = absl::Milliseconds(200);  // a refused handshake is UNAVAILABLE: retry briefly
    o.tls = std::move(tls);
    absl::StatusOr<std::unique_ptr<PsClient>> client = PsClient::Connect(o);
    if (!client.ok()) return client.status();
    return (*client)->Init(std::vector<float>(100, 1.0f));
  }

  static std::string* dir_;
  static bool made_;
  std::unique_ptr<ShardServer> server_;
};

std::string* TlsTest::dir_ = nullptr;
bool TlsTest::made_ = false;

TEST_F(TlsTest, ServerTlsAcceptsTheRightCaAndRefusesPlaintextAndStrangers) {
  Serve(/*mutual=*/false);
  EXPECT_TRUE(Try({File("ca.pem"), "", ""}).ok());
  EXPECT_FALSE(Try({}).ok()) << "plaintext to a TLS shard";
  EXPECT_FALSE(Try({File("other-ca.pem"), "", ""}).ok()) << "a CA that did not sign the shard";
  EXPECT_EQ(Try({File("ca.pem"), "", ""}, "wrong-token").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Try({File("ca.pem"), "", ""}, "").code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificate) {
  Serve(/*mutual=*/true);
  EXPECT_TRUE(Try({File("ca.pem"), File("node.pem"), File("node.key")}).ok());
  EXPECT_FALSE(Try({File("ca.pem"), "", ""}).ok()) << "no client certificate";
  EXPECT_EQ(Try({File("ca.pem"), File("node.pem"), File("node.key")}, "wrong-token").code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(TlsTest, PushesTravelOnStreamsOverMutualTls) {
  Serve(/*mutual=*/true);
  ClientOptions o;
  o.endpoints = {server_->address()};
  o.job_id = "tls-job";
  o.token = "right-token";
  o.tensors = {{"w", 100}};
  o.rpc_timeout = absl::Seconds(5);
  o.tls = {File("ca.pem"), File("node.pem"), File("node.key")};
  auto client = PsClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Init(std::vector<float>(100, 1.0f)).ok());
  std::vector<float> w(100);
  for (int t = 0; t < 3; ++t) {
    ASSERT_TRUE((*client)->Pull(t, w).ok());
    absl::Status st = (*client)->Push(t, std::vector<float>(100, 1.0f), 1, 0.0f);
    ASSERT_TRUE(st.ok()) << st;
  }
  EXPECT_EQ((*client)->wire_stats().streamed_shard_pushes, 3u);
  EXPECT_EQ(server_->shard().DebugState().version, 3u);
}

TEST_F(TlsTest, MissingOrBadFilesAreErrorsNamingTheFile) {
  auto bad_server = MakeServerCredentials({"", File("missing.pem"), File("node.key")});
  ASSERT_FALSE(bad_server.ok());
  EXPECT_THAT(std::string(bad_server.status().message()), HasSubstr("missing.pem"));
  EXPECT_FALSE(MakeServerCredentials({"", File("node.pem"), ""}).ok()) << "a certificate without key";
  auto not_pem = MakeChannelCredentials({File("ca.key.notthere"), "", ""});
  EXPECT_FALSE(not_pem.ok());
  EXPECT_FALSE(MakeChannelCredentials({"", File("node.pem"), File("node.key")}).ok()) << "no CA";
  EXPECT_FALSE(MakeChannelCredentials({File("ca.pem"), File("node.pem"), ""}).ok()) << "cert without key";
  std::ofstream(File("junk.pem")) << "not a certificate\n";
  auto junk = MakeChannelCredentials({File("junk.pem"), "", ""});
  ASSERT_FALSE(junk.ok());
  EXPECT_THAT(std::string(junk.status().message()), HasSubstr("is not PEM"));
}

}  // namespace
}  // namespace orrery::server
