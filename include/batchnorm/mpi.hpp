// batchnorm: the Communicator over MPI, for synchronized batch norm across processes and
// machines. Optional: include it only with MPI (CMake target batchnorm::mpi, which exists when
// CMake finds MPI); the rest of the library has no MPI dependency.
#pragma once

#include "config.hpp"

#include <mpi.h>

#include <cstddef>
#include <map>
#include <stdexcept>
#include <string>

#include "communicator.hpp"

BATCHNORM_BEGIN_NAMESPACE

/// Communicator over an MPI communicator (MPI_COMM_WORLD by default): all_reduce is one
/// MPI_Allreduce, in place, with a user-defined, non-commutative reduction that calls
/// batchnorm::combine(). The buffer goes as ONE element of a contiguous datatype of n doubles,
/// so that MPI never splits a record between two calls of the reduction, and the reduction
/// learns n from the datatype. Declared non-commutative, the reduction is applied in rank order;
/// Open MPI then reduces and broadcasts, so every rank receives the same bytes (the tests
/// check it on 1 to 3 ranks).
///
/// MPI must be initialized before the communicator is built and finalized after it is
/// destroyed (it frees its MPI operations and datatypes). Not thread-safe: one thread of a
/// process uses it (MPI_THREAD_FUNNELED or more). MPI errors follow the communicator's MPI error
/// handler (by default MPI aborts); with MPI_ERRORS_RETURN this class throws std::runtime_error.
class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    check(MPI_Op_create(&reduce_moments, /*commute=*/0, &moments_op_), "MPI_Op_create");
    check(MPI_Op_create(&reduce_sum, /*commute=*/0, &sum_op_), "MPI_Op_create");
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // too late to free anything; MPI_Finalize released it
    for (auto& t : types_) MPI_Type_free(&t.second);
    MPI_Op_free(&moments_op_);
    MPI_Op_free(&sum_op_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm comm() const noexcept { return comm_; }

  void all_reduce(double* data, std::size_t n, ReduceOp op) override {
    if (n == 0) return;
    check(MPI_Allreduce(MPI_IN_PLACE, data, 1, record_type(n), op == ReduceOp::moments ? moments_op_ : sum_op_, comm_),
          "MPI_Allreduce");
  }

 private:
  static void check(int rc, const char* what) {
    if (rc != MPI_SUCCESS) throw std::runtime_error(std::string("batchnorm::MpiCommunicator: ") + what + " failed");
  }
  /// The datatype of n contiguous doubles, built once per n.
  MPI_Datatype record_type(std::size_t n) {
    const auto it = types_.find(n);
    if (it != types_.end()) return it->second;
    MPI_Datatype t;
    check(MPI_Type_contiguous(static_cast<int>(n), MPI_DOUBLE, &t), "MPI_Type_contiguous");
    check(MPI_Type_commit(&t), "MPI_Type_commit");
    types_.emplace(n, t);
    return t;
  }
  /// MPI user functions: inout <- in (+) inout for `len` records of the type's n doubles.
  static void reduce(void* in, void* inout, int* len, MPI_Datatype* type, ReduceOp op) {
    int bytes = 0;
    MPI_Type_size(*type, &bytes);
    const auto n = static_cast<std::size_t>(bytes) / sizeof(double);
    for (int k = 0; k < *len; ++k)
      combine(static_cast<const double*>(in) + static_cast<std::size_t>(k) * n,
              static_cast<double*>(inout) + static_cast<std::size_t>(k) * n, n, op);
  }
  static void reduce_moments(void* in, void* inout, int* len, MPI_Datatype* type) {
    reduce(in, inout, len, type, ReduceOp::moments);
  }
  static void reduce_sum(void* in, void* inout, int* len, MPI_Datatype* type) { reduce(in, inout, len, type, ReduceOp::sum); }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  MPI_Op moments_op_ = MPI_OP_NULL, sum_op_ = MPI_OP_NULL;
  std::map<std::size_t, MPI_Datatype> types_;
};

BATCHNORM_END_NAMESPACE
