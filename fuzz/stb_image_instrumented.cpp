// stb_image's decoder compiled into the image harnesses, so that it is instrumented too (ASan,
// UBSan, coverage): the engine links Debian's prebuilt libstb (CMakeLists.txt), which no sanitizer
// sees into. Definitions in the executable take precedence over the shared libstb's, so every
// stbi_* call of mambavl_core lands here. Same header, so the same version and options.
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
