# The note taker's file writer (include/pirec/notes.h); the executable is apps/pirec-notes.
add_library(pirec_notes STATIC ${CMAKE_CURRENT_LIST_DIR}/notes.c)
target_include_directories(pirec_notes PUBLIC ${PIREC_INCLUDE_DIR})
target_link_libraries(pirec_notes PUBLIC PkgConfig::UV pirec_io_base pirec_io_sink pirec_io_csv)
