// The GEMM k loop's instruction mix in isolation (A, B in L1), against 12 FMAs alone:
// gcc -O2 -mavx2 -mfma bench/kernel/kloop.c -o target/kloop && target/kloop  (bench/HISTORY.md: what bounds the missed targets)
// Each variant is a 128-step k loop (one branch per step, as in the kernel) inside an outer loop
// that resets the pointers: an earlier version wrapped them with a second branch inside the k
// loop, which by itself cost 10-30 % and made every variant read 0.6-0.7.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <immintrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
float A[6*128*8] __attribute__((aligned(64)));
float B[128*16] __attribute__((aligned(64)));
#define FMAS \
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm0\n" "vfmadd231ps %%ymm14, %%ymm13, %%ymm1\n" \
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm2\n" "vfmadd231ps %%ymm15, %%ymm13, %%ymm3\n" \
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm4\n" "vfmadd231ps %%ymm14, %%ymm13, %%ymm5\n" \
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm6\n" "vfmadd231ps %%ymm15, %%ymm13, %%ymm7\n" \
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm8\n" "vfmadd231ps %%ymm14, %%ymm13, %%ymm9\n" \
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm10\n" "vfmadd231ps %%ymm15, %%ymm13, %%ymm11\n"
// variant 0: FMAs only
static void v0(long n){ __asm__ volatile("1:\n" FMAS "dec %0\n jnz 1b\n" : "+r"(n) :: "memory"); }
// variant 1: current kernel shape: 2 B loads, 6 broadcasts interleaved (rows stride 512B)
static void v1(long n, float*a0, float*b0){ float *a, *b; n /= 128; __asm__ volatile(
 "3: mov %3, %1\n mov %4, %2\n mov $128, %%rcx\n .p2align 5\n 1:\n"
 "vmovups (%2), %%ymm12\n vmovups 32(%2), %%ymm13\n"
 "vbroadcastss (%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm0\n vfmadd231ps %%ymm14, %%ymm13, %%ymm1\n"
 "vbroadcastss 512(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm2\n vfmadd231ps %%ymm15, %%ymm13, %%ymm3\n"
 "vbroadcastss 1024(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm4\n vfmadd231ps %%ymm14, %%ymm13, %%ymm5\n"
 "vbroadcastss 1536(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm6\n vfmadd231ps %%ymm15, %%ymm13, %%ymm7\n"
 "vbroadcastss 2048(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm8\n vfmadd231ps %%ymm14, %%ymm13, %%ymm9\n"
 "vbroadcastss 2560(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm10\n vfmadd231ps %%ymm15, %%ymm13, %%ymm11\n"
 "add $4, %1\n add $64, %2\n dec %%rcx\n jnz 1b\n dec %0\n jnz 3b\n"
 : "+r"(n), "=&r"(a), "=&r"(b) : "r"(a0), "r"(b0) : "rcx", "memory"); }
// variant 2: pre-broadcast A: 6 full 32-byte loads instead of broadcasts
static void v2(long n, float*a0, float*b0){ float *a, *b; n /= 128; __asm__ volatile(
 "3: mov %3, %1\n mov %4, %2\n mov $128, %%rcx\n .p2align 5\n 1:\n"
 "vmovups (%2), %%ymm12\n vmovups 32(%2), %%ymm13\n"
 "vmovaps (%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm0\n vfmadd231ps %%ymm14, %%ymm13, %%ymm1\n"
 "vmovaps 32(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm2\n vfmadd231ps %%ymm15, %%ymm13, %%ymm3\n"
 "vmovaps 64(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm4\n vfmadd231ps %%ymm14, %%ymm13, %%ymm5\n"
 "vmovaps 96(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm6\n vfmadd231ps %%ymm15, %%ymm13, %%ymm7\n"
 "vmovaps 128(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm8\n vfmadd231ps %%ymm14, %%ymm13, %%ymm9\n"
 "vmovaps 160(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm10\n vfmadd231ps %%ymm15, %%ymm13, %%ymm11\n"
 "add $192, %1\n add $64, %2\n dec %%rcx\n jnz 1b\n dec %0\n jnz 3b\n"
 : "+r"(n), "=&r"(a), "=&r"(b) : "r"(a0), "r"(b0) : "rcx", "memory"); }
// variant 3: broadcasts from packed A (6 contiguous floats per k)
static void v3(long n, float*a0, float*b0){ float *a, *b; n /= 128; __asm__ volatile(
 "3: mov %3, %1\n mov %4, %2\n mov $128, %%rcx\n .p2align 5\n 1:\n"
 "vmovups (%2), %%ymm12\n vmovups 32(%2), %%ymm13\n"
 "vbroadcastss (%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm0\n vfmadd231ps %%ymm14, %%ymm13, %%ymm1\n"
 "vbroadcastss 4(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm2\n vfmadd231ps %%ymm15, %%ymm13, %%ymm3\n"
 "vbroadcastss 8(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm4\n vfmadd231ps %%ymm14, %%ymm13, %%ymm5\n"
 "vbroadcastss 12(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm6\n vfmadd231ps %%ymm15, %%ymm13, %%ymm7\n"
 "vbroadcastss 16(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm8\n vfmadd231ps %%ymm14, %%ymm13, %%ymm9\n"
 "vbroadcastss 20(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm10\n vfmadd231ps %%ymm15, %%ymm13, %%ymm11\n"
 "add $24, %1\n add $64, %2\n dec %%rcx\n jnz 1b\n dec %0\n jnz 3b\n"
 : "+r"(n), "=&r"(a), "=&r"(b) : "r"(a0), "r"(b0) : "rcx", "memory"); }
// variant 4: the kernel shape unrolled twice (one pointer bump and branch per two k)
static void v5(long n, float*a0, float*b0){ float *a, *b; n /= 128; __asm__ volatile(
 "3: mov %3, %1\n mov %4, %2\n mov $64, %%rcx\n .p2align 5\n 1:\n"
 "vmovups (%2), %%ymm12\n vmovups 32(%2), %%ymm13\n"
 "vbroadcastss (%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm0\n vfmadd231ps %%ymm14, %%ymm13, %%ymm1\n"
 "vbroadcastss 512(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm2\n vfmadd231ps %%ymm15, %%ymm13, %%ymm3\n"
 "vbroadcastss 1024(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm4\n vfmadd231ps %%ymm14, %%ymm13, %%ymm5\n"
 "vbroadcastss 1536(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm6\n vfmadd231ps %%ymm15, %%ymm13, %%ymm7\n"
 "vbroadcastss 2048(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm8\n vfmadd231ps %%ymm14, %%ymm13, %%ymm9\n"
 "vbroadcastss 2560(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm10\n vfmadd231ps %%ymm15, %%ymm13, %%ymm11\n"
 "vmovups 64(%2), %%ymm12\n vmovups 96(%2), %%ymm13\n"
 "vbroadcastss 4(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm0\n vfmadd231ps %%ymm14, %%ymm13, %%ymm1\n"
 "vbroadcastss 516(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm2\n vfmadd231ps %%ymm15, %%ymm13, %%ymm3\n"
 "vbroadcastss 1028(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm4\n vfmadd231ps %%ymm14, %%ymm13, %%ymm5\n"
 "vbroadcastss 1540(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm6\n vfmadd231ps %%ymm15, %%ymm13, %%ymm7\n"
 "vbroadcastss 2052(%1), %%ymm14\n"
 "vfmadd231ps %%ymm14, %%ymm12, %%ymm8\n vfmadd231ps %%ymm14, %%ymm13, %%ymm9\n"
 "vbroadcastss 2564(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm10\n vfmadd231ps %%ymm15, %%ymm13, %%ymm11\n"
 "add $8, %1\n add $128, %2\n dec %%rcx\n jnz 1b\n dec %0\n jnz 3b\n"
 : "+r"(n), "=&r"(a), "=&r"(b) : "r"(a0), "r"(b0) : "rcx", "memory"); }
// variant 5: a 4x24 tile: three B loads and four broadcasts per twelve FMAs
static void v4(long n, float*a0, float*b0){ float *a, *b; n /= 128; __asm__ volatile(
 "3: mov %3, %1\n mov %4, %2\n mov $128, %%rcx\n .p2align 5\n 1:\n"
 "vmovups (%2), %%ymm12\n vmovups 32(%2), %%ymm13\n vmovups 64(%2), %%ymm14\n"
 "vbroadcastss (%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm0\n vfmadd231ps %%ymm15, %%ymm13, %%ymm1\n vfmadd231ps %%ymm15, %%ymm14, %%ymm2\n"
 "vbroadcastss 512(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm3\n vfmadd231ps %%ymm15, %%ymm13, %%ymm4\n vfmadd231ps %%ymm15, %%ymm14, %%ymm5\n"
 "vbroadcastss 1024(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm6\n vfmadd231ps %%ymm15, %%ymm13, %%ymm7\n vfmadd231ps %%ymm15, %%ymm14, %%ymm8\n"
 "vbroadcastss 1536(%1), %%ymm15\n"
 "vfmadd231ps %%ymm15, %%ymm12, %%ymm9\n vfmadd231ps %%ymm15, %%ymm13, %%ymm10\n vfmadd231ps %%ymm15, %%ymm14, %%ymm11\n"
 "add $4, %1\n add $96, %2\n dec %%rcx\n jnz 1b\n dec %0\n jnz 3b\n"
 : "+r"(n), "=&r"(a), "=&r"(b) : "r"(a0), "r"(b0) : "rcx", "memory"); }
float B2[128*24] __attribute__((aligned(64)));
int main(){ long n=50000000; double t;
 for(int rep=0;rep<20;rep++){
 t=now(); v0(n); double t0=now()-t;
 t=now(); v1(n,A,B); double t1=now()-t;
 t=now(); v2(n,A,B); double t2=now()-t;
 t=now(); v3(n,A,B); double t3=now()-t;
 t=now(); v5(n,A,B); double t5=now()-t;
 t=now(); v4(n,A,B2); double t4=now()-t;
 printf("fma-only %.3f  bcast-rows %.2f  preb-cast %.2f  bcast-packed %.2f  unroll2 %.2f  4x24 %.2f\n",t0,t0/t1,t0/t2,t0/t3,t0/t5,t0/t4);}
}
