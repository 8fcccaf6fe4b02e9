# One fuzz.smoke.* test: copies the seed corpus SEEDS into WORK/corpus (fresh every run, so the
# source tree is never written to), then fuzzes it with FUZZER from the fixed random SEED for
# RUNS inputs, or SECONDS if that comes first (a slow machine runs a shorter prefix of the same
# sequence). The same binary fuzzes the same inputs on every run; another build (another source
# path, compiler or flags) may mutate differently, as libFuzzer also draws on the binary's
# constants. Finding new cases is the job of long sessions (run.sh --hours). Crash files land in
# WORK/ (crash-*, leak-*, timeout-*); the test fails if the fuzzer finds anything.
#   cmake -DFUZZER=... -DSEEDS=... -DWORK=... -DSEED=1 -DRUNS=6000 -DSECONDS=300 -P smoke.cmake
foreach(var FUZZER SEEDS WORK SEED RUNS SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "smoke.cmake: ${var} is not set")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK}/corpus)
file(MAKE_DIRECTORY ${WORK}/corpus)
file(GLOB seeds ${SEEDS}/*)
file(COPY ${seeds} DESTINATION ${WORK}/corpus)
message(STATUS "fuzzing ${WORK}/corpus: seed ${SEED}, ${RUNS} inputs or ${SECONDS} s, BATCHNORM_ISA=$ENV{BATCHNORM_ISA}")
execute_process(
  COMMAND ${FUZZER} -seed=${SEED} -runs=${RUNS} -max_total_time=${SECONDS} -max_len=1024 -timeout=60 -print_final_stats=1
          -artifact_prefix=${WORK}/ ${WORK}/corpus
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "fuzz_batch_norm failed (exit ${result}); the reproducer is in ${WORK}/ "
                      "(replay: ${FUZZER} ${WORK}/crash-...)")
endif()
