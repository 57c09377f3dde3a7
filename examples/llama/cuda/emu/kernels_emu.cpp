// The LLaMa kernels built for the host: every .cu source of this folder
// compiled as C++ against the emulator (cuda_emu.h), so the CPU tests run
// the very code nvcc compiles, launchers included (lk.h). One translation
// unit; each .cu keeps its helpers in its own namespace.
#define LK_EMULATE 1

#include "../elementwise.cu"
#include "../norm_rope.cu"
#include "../loss.cu"
#include "../attention.cu"
