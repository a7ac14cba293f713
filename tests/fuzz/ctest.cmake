# Registers the bounded fuzz run with the main build's ctest. The fuzz build itself is a
# separate clang project (tests/fuzz/CMakeLists.txt) that tests/fuzz/run configures and
# builds in build-fuzz/; the main build only runs the script. Included from the root
# CMakeLists.txt after enable_testing().
add_test(NAME fuzz_parsers COMMAND ${CMAKE_SOURCE_DIR}/tests/fuzz/run 20)
# A first run installs clang and builds the sanitized libraries (several minutes on two
# cores); later runs rebuild only what changed, then fuzz five targets for 20 s each.
set_tests_properties(fuzz_parsers PROPERTIES TIMEOUT 2400 LABELS fuzz RUN_SERIAL TRUE)
