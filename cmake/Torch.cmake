# Locates LibTorch from the PyPI `torch` wheel (CMAKE_PREFIX_PATH = torch.utils.cmake_prefix_path).
#
# CPU build (default): an imported target `mambavl::torch` on libtorch_cpu + libc10 only. The wheel's
# libtorch.so pulls in libtorch_cuda.so (cuDNN, NCCL, cuBLAS... at load time), which a CPU machine
# neither has nor needs; every C++ API symbol we use lives in libtorch_cpu.
# CUDA build (-DMAMBAVL_CUDA=ON): the wheel's own TorchConfig (find_package(Torch)), CUDA included.
find_path(MAMBAVL_TORCH_CMAKE_DIR Torch/TorchConfig.cmake PATHS ${CMAKE_PREFIX_PATH} NO_DEFAULT_PATH)
if(NOT MAMBAVL_TORCH_CMAKE_DIR)
  message(FATAL_ERROR "LibTorch not found: run scripts/install-deps.sh, then configure with "
                      "-DCMAKE_PREFIX_PATH=<site-packages>/torch/share/cmake (scripts/build.sh does this).")
endif()
get_filename_component(MAMBAVL_TORCH_ROOT "${MAMBAVL_TORCH_CMAKE_DIR}/../.." ABSOLUTE)

if(MAMBAVL_CUDA)
  find_package(Torch REQUIRED)
  add_library(mambavl::torch INTERFACE IMPORTED)
  target_link_libraries(mambavl::torch INTERFACE ${TORCH_LIBRARIES})
  target_compile_definitions(mambavl::torch INTERFACE MAMBAVL_WITH_CUDA=1)
else()
  find_library(MAMBAVL_TORCH_CPU_LIB torch_cpu PATHS "${MAMBAVL_TORCH_ROOT}/lib" NO_DEFAULT_PATH REQUIRED)
  find_library(MAMBAVL_C10_LIB c10 PATHS "${MAMBAVL_TORCH_ROOT}/lib" NO_DEFAULT_PATH REQUIRED)
  add_library(mambavl::torch INTERFACE IMPORTED)
  target_include_directories(mambavl::torch SYSTEM INTERFACE
    "${MAMBAVL_TORCH_ROOT}/include" "${MAMBAVL_TORCH_ROOT}/include/torch/csrc/api/include")
  target_link_libraries(mambavl::torch INTERFACE "${MAMBAVL_TORCH_CPU_LIB}" "${MAMBAVL_C10_LIB}")
  # The wheel is built with the C++11 ABI.
  target_compile_definitions(mambavl::torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
endif()
set(CMAKE_BUILD_RPATH "${MAMBAVL_TORCH_ROOT}/lib")
message(STATUS "LibTorch: ${MAMBAVL_TORCH_ROOT} (CUDA: ${MAMBAVL_CUDA})")
