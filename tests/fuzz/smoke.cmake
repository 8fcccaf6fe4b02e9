# One fuzz.smoke.* test: copies the seed corpus SEEDS into WORK/corpus (fresh every run, so the
# source tree is never written to), then fuzzes it with FUZZER from the fixed random SEED for
# RUNS inputs, or SECONDS if that comes first (a slow machine runs a shorter prefix of the same
# sequence). The same binary fuzzes the same inputs on every run; another build (another source
# path, compiler or flags) may mutate differently, as libFuzzer also draws on the binary's
# constants. Finding new cases is the job of long sessions (run.sh --hours). Crash files land in
# WORK/ (crash-*, leak-*, timeout-*); the test fails if the fuzzer finds anything.
#   cmake -DFUZZER=... -DSEEDS=... -DWORK=... -DSEED=1 -DRUNS=6000 -DSECONDS=300 [-DMAX_LEN=1024] -P smoke.cmake
foreach(var FUZZER SEEDS WORK SEED RUNS SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "smoke.cmake: ${var} is not set")
  endif()
endforeach()
if(NOT DEFINED MAX_LEN)
  set(MAX_LEN 1024)
endif()
file(REMOVE_RECURSE ${WORK}/corpus)
file(MAKE_DIRECTORY ${WORK}/corpus)
file(GLOB seeds ${SEEDS}/*)
file(COPY ${seeds} DESTINATION ${WORK}/corpus)
message(STATUS "fuzzing ${WORK}/corpus: seed ${SEED}, ${RUNS} inputs or ${SECONDS} s, BATCHNORM_ISA=$ENV{BATCHNORM_ISA}")
execute_process(
  COMMAND ${FUZZER} -seed=${SEED} -runs=${RUNS} -max_total_time=${SECONDS} -max_len=${MAX_LEN} -timeout=60 -print_final_stats=1
          -artifact_prefix=${WORK}/ ${WORK}/corpus
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  get_filename_component(fuzzer_name ${FUZZER} NAME)
  message(FATAL_ERROR "${fuzzer_name} failed (exit ${result}); the reproducer is in ${WORK}/ "
                      "(replay: ${FUZZER} ${WORK}/crash-...)")
endif()
