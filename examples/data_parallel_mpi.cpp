// data_parallel_mpi: synchronized batch norm in a data-parallel training loop over MPI.
//
//   mpirun -np 4 build/release/examples/data_parallel_mpi      (add --oversubscribe with more
//                                                               ranks than cores, and
//                                                               --allow-run-as-root as root)
//
// Every rank holds a small batch of its own (rank r: 1 + r samples: uneven on purpose). The
// synchronized BatchNorm2d normalizes each with the statistics of all the ranks' samples; the
// usual gradient all-reduce then sums the ranks' weight/bias gradients (each rank's module gives
// its own contribution, as PyTorch's SyncBatchNorm), and every rank applies the same SGD step,
// so parameters and running statistics stay identical on every rank.
#include <batchnorm/batchnorm.hpp>
#include <batchnorm/mpi.hpp>

#include <cstdio>
#include <random>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  {
    batchnorm::MpiCommunicator comm;  // MPI_COMM_WORLD; destroyed before MPI_Finalize
    const int rank = comm.rank(), ranks = comm.size();
    batchnorm::BatchNorm2d<float> bn(batchnorm::BatchNormOptions(4), comm);

    using Tensor4 = Eigen::Tensor<float, 4, Eigen::RowMajor>;  // (N, C, H, W)
    const Eigen::Index n = 1 + rank;                          // this rank's batch size
    Tensor4 x(n, 4, 8, 8), dy(n, 4, 8, 8), y(n, 4, 8, 8), dx(n, 4, 8, 8);
    std::mt19937 gen(static_cast<unsigned>(17 + rank));
    std::normal_distribution<float> data(3.0f, 2.0f), grad(0.0f, 1.0f);

    for (int step = 0; step < 3; ++step) {
      for (Eigen::Index k = 0; k < x.size(); ++k) x.data()[k] = data(gen), dy.data()[k] = grad(gen);
      bn.forward(x, y);       // one all-reduce: (count, mean, M2) of every channel
      bn.backward(x, dy, dx); // one all-reduce: sum dy and sum dy * (x - mean) of every channel
      // The data-parallel gradient all-reduce (a framework does it for every parameter).
      Eigen::Tensor<float, 1> dw = bn.weight_grad(), db = bn.bias_grad();
      MPI_Allreduce(MPI_IN_PLACE, dw.data(), 4, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      MPI_Allreduce(MPI_IN_PLACE, db.data(), 4, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      bn.weight() -= 1e-3f * dw;
      bn.bias() -= 1e-3f * db;
    }
    int total = 0, mine = static_cast<int>(n);
    MPI_Allreduce(&mine, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    // The running statistics are the same bytes on every rank: print rank 0's and check the rest.
    float rm0 = bn.running_mean()(0), rv0 = bn.running_var()(0);
    MPI_Bcast(&rm0, 1, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(&rv0, 1, MPI_FLOAT, 0, MPI_COMM_WORLD);
    int same = bn.running_mean()(0) == rm0 && bn.running_var()(0) == rv0 ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &same, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    std::printf("rank %d of %d: %d of the %d samples a step\n", rank, ranks, static_cast<int>(n), total);
    std::fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
      std::printf("after 3 steps: running_mean[0] = %.4f, running_var[0] = %.4f (statistics over %d samples "
                  "x 64 values a channel), %s on every rank\n",
                  static_cast<double>(rm0), static_cast<double>(rv0), total, same ? "the same" : "NOT the same");
      std::printf("weight[0] = %.6f, bias[0] = %.6f after the SGD steps\n", static_cast<double>(bn.weight()(0)),
                  static_cast<double>(bn.bias()(0)));
    }
    if (!same) MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return 0;
}
