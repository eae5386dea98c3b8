# Helpers that turn a folder of sources into a library and a folder of *_test.cc into CTest tests.

# orrery_add_library(NAME DIRS d1 [d2...] DEPS t1 [t2...])
# Every *.cc directly inside the listed directories (relative to this CMakeLists) is compiled.
function(orrery_add_library name)
  cmake_parse_arguments(ARG "" "" "DIRS;DEPS" ${ARGN})
  set(srcs)
  foreach(d ${ARG_DIRS})
    file(GLOB s CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${d}/*.cc)
    list(APPEND srcs ${s})
  endforeach()
  if(srcs)
    add_library(${name} STATIC ${srcs})
    target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  else()
    add_library(${name} INTERFACE)
    target_link_libraries(${name} INTERFACE ${ARG_DEPS})
  endif()
endfunction()

# Test sources are compiled without optimisation: they orchestrate, the optimised libraries do the
# work. On 2 cores the test sources took about 5.6 min of the build's wall time at -O3 (671 s of
# compile summed) and 4.3 min at -O0; the build is most of `make test`.
function(orrery_test_compile_options exe)
  target_compile_options(${exe} PRIVATE -O0)
endfunction()

# orrery_add_tests(PREFIX DEPS t1 [t2...] [LABELS l])
# Each *_test.cc in this directory becomes its own executable PREFIX_<stem>, discovered by CTest.
function(orrery_add_tests prefix)
  cmake_parse_arguments(ARG "" "TIMEOUT" "DEPS;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  file(GLOB tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_test.cc)
  foreach(t ${tests})
    get_filename_component(stem ${t} NAME_WE)
    set(exe ${prefix}_${stem})
    add_executable(${exe} ${t})
    target_link_libraries(${exe} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
    orrery_test_compile_options(${exe})
    target_compile_definitions(${exe} PRIVATE
      ORRERY_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
      ORRERY_BINARY="$<TARGET_FILE:orrery>")
    gtest_discover_tests(${exe} DISCOVERY_MODE PRE_TEST
      PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}")
  endforeach()
endfunction()
