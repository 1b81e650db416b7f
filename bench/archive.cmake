# bench-archive: `pirec archive` against `tar | zstd` at the same level (issue 20). A python3 script,
# copied next to the other benchmarks so that its default --pirec (../apps/pirec) is the build's.
configure_file(${CMAKE_CURRENT_LIST_DIR}/bench-archive ${CMAKE_CURRENT_BINARY_DIR}/bench-archive COPYONLY)
