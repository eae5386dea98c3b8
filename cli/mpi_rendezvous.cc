#include "cli/mpi_rendezvous.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace orrery::cli {
namespace {

absl::Status MpiError(const char* call, int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(code, text, &len);
  return absl::UnavailableError(absl::StrCat(call, ": ", std::string(text, len)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<MpiRendezvous>> MpiRendezvous::Init() {
  int provided = MPI_THREAD_SINGLE;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) return MpiError("MPI_Init_thread", rc);
  if (provided < MPI_THREAD_SERIALIZED) {
    MPI_Finalize();
    return absl::UnavailableError("MPI_Init_thread: this MPI library provides no MPI_THREAD_SERIALIZED support");
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  auto rv = std::unique_ptr<MpiRendezvous>(new MpiRendezvous());
  MPI_Comm_rank(MPI_COMM_WORLD, &rv->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &rv->size_);
  return rv;
}

absl::StatusOr<std::vector<std::string>> MpiRendezvous::AllGather(const std::string& value,
                                                                  absl::Duration /*timeout*/) {
  int mine = static_cast<int>(value.size());
  std::vector<int> lengths(size_);
  int rc = MPI_Allgather(&mine, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return MpiError("MPI_Allgather", rc);
  std::vector<int> offsets(size_);
  int total = 0;
  for (int r = 0; r < size_; ++r) {
    offsets[r] = total;
    total += lengths[r];
  }
  std::string all(static_cast<size_t>(total), '\0');
  rc = MPI_Allgatherv(value.data(), mine, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR,
                      MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return MpiError("MPI_Allgatherv", rc);
  std::vector<std::string> values;
  for (int r = 0; r < size_; ++r) values.push_back(all.substr(offsets[r], lengths[r]));
  return values;
}

absl::Status MpiRendezvous::Arrive(int phase) {
  MPI_Request request;
  int rc = MPI_Ibarrier(MPI_COMM_WORLD, &request);
  if (rc != MPI_SUCCESS) return MpiError("MPI_Ibarrier", rc);
  barriers_[phase] = request;
  return absl::OkStatus();
}

absl::StatusOr<bool> MpiRendezvous::Test(int phase) {
  if (completed_[phase]) return true;
  auto it = barriers_.find(phase);
  if (it == barriers_.end()) return absl::FailedPreconditionError(absl::StrCat("barrier ", phase, " not entered"));
  int flag = 0;
  int rc = MPI_Test(&it->second, &flag, MPI_STATUS_IGNORE);
  if (rc != MPI_SUCCESS) return MpiError("MPI_Test", rc);
  if (flag) completed_[phase] = true;
  return flag != 0;
}

void MpiRendezvous::Finalize() { MPI_Finalize(); }

void MpiRendezvous::Abort(int code, const std::string& reason) {
  std::fprintf(stderr, "orrery mpi-rank %d: aborting the job: %s\n", rank_, reason.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code == 0 ? 1 : code);
}

}  // namespace orrery::cli
