# paramd_proto_library(TARGET ROOT proto...): a static library with the C++ messages and
# gRPC stubs of `proto...`, which are imported relative to ROOT.
function(paramd_proto_library target root)
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/gen)
  file(MAKE_DIRECTORY ${out_dir})
  set(sources)
  foreach(proto ${ARGN})
    get_filename_component(stem ${proto} NAME_WE)
    get_filename_component(dir ${proto} DIRECTORY)
    file(RELATIVE_PATH package_dir ${root} ${dir})
    set(out ${out_dir}/${package_dir}/${stem})
    list(APPEND sources ${out}.pb.cc ${out}.grpc.pb.cc)
    add_custom_command(
      OUTPUT ${out}.pb.cc ${out}.pb.h ${out}.grpc.pb.cc ${out}.grpc.pb.h
      COMMAND ${PARAMD_PROTOC} -I ${root} --cpp_out=${out_dir} --grpc_out=${out_dir}
              --plugin=protoc-gen-grpc=${PARAMD_GRPC_CPP_PLUGIN} ${proto}
      DEPENDS ${ARGN}
      COMMENT "protoc ${stem}.proto")
  endforeach()
  add_library(${target} STATIC ${sources})
  target_include_directories(${target} PUBLIC ${out_dir})
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf gRPC::grpc++)
  # Generated code is not ours to warn about.
  target_compile_options(${target} PRIVATE -w)
endfunction()
