"""AVX-512 GEMM k-loop shapes in isolation (A and B in L1), against 24 zmm FMAs alone.

Writes a C file (bench/HISTORY.md, "AVX-512 (session 9)": the tile-shape table), by default
target/avx512_tiles.c (target/ is ignored by git):

    python3 bench/kernel/avx512_tiles.py target/avx512_tiles.c
    gcc -O2 -mavx512f target/avx512_tiles.c -o target/avx512_tiles && target/avx512_tiles

Each printed value is a shape's FLOP rate as a share of the FMA-only rate of the same round.
Names: rRcC = R rows x 16C columns (C zmm B vectors per k-step); a trailing e broadcasts A from
memory inside the FMA ({1to16}), otherwise vbroadcastss into a register first. Each variant is a
128-step k loop (A rows 512 B apart, as at width 128; B panel rows 64 B apart, the second panel
8 KiB on) in an outer loop that resets the pointers. The kernel in src/nn/gemm/avx512.rs is r12c1e.
"""
import pathlib
import sys


def variant(name, R, C, emb):
    # R rows, C zmm columns (1 or 2); emb: embedded broadcast
    lines=[]
    for c in range(C):
        off = c*8192
        lines.append(f"vmovups {off}(%2), %%zmm{28+c}\\n")
    for r in range(R):
        aoff = (r%3)*512
        base = ["%1","%%r8","%%r9","%%r10","%%r11"][r//3]
        if emb:
            for c in range(C):
                lines.append(f"vfmadd231ps {aoff}({base})%{{1to16%}}, %%zmm{28+c}, %%zmm{r*C+c}\\n")
        else:
            reg = 30 + (r%2)
            lines.append(f"vbroadcastss {aoff}({base}), %%zmm{reg}\\n")
            for c in range(C):
                lines.append(f"vfmadd231ps %%zmm{reg}, %%zmm{28+c}, %%zmm{r*C+c}\\n")
    body = " ".join(f'"{l}"' for l in lines)
    return f'''static void {name}(long n, float*a0, float*b0){{ float *a, *b; n /= 128; __asm__ volatile(
 "3: mov %3, %1\\n mov %4, %2\\n lea 1536(%1), %%r8\\n lea 3072(%1), %%r9\\n lea 4608(%1), %%r10\\n lea 6144(%1), %%r11\\n mov $128, %%rcx\\n .p2align 5\\n 1:\\n"
 {body}
 "add $4, %1\\n add $4, %%r8\\n add $4, %%r9\\n add $4, %%r10\\n add $4, %%r11\\n add $64, %2\\n dec %%rcx\\n jnz 1b\\n dec %0\\n jnz 3b\\n"
 : "+r"(n), "=&r"(a), "=&r"(b) : "r"(a0), "r"(b0) : "rcx","r8","r9","r10","r11", "memory"); }}
'''
VARIANTS = [("r12c1", 12, 1, False), ("r12c1e", 12, 1, True), ("r6c2", 6, 2, False),
            ("r6c2e", 6, 2, True), ("r8c2", 8, 2, False), ("r12c2", 12, 2, False),
            ("r12c2e", 12, 2, True), ("r6c1e", 6, 1, True), ("r8c1e", 8, 1, True),
            ("r10c1e", 10, 1, True), ("r14c1e", 14, 1, True)]
vs = VARIANTS
out=['#include <stdio.h>\n#include <time.h>\nstatic double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}\nfloat A[12*128*8+4096] __attribute__((aligned(64)));\nfloat B[128*16*2+4096] __attribute__((aligned(64)));\n']
for v in vs: out.append(variant(*v))
out.append('#define Z(i) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #i "\\n"\nstatic void pk(long n){n/=1;__asm__ volatile("1:\\n" Z(0)Z(1)Z(2)Z(3)Z(4)Z(5)Z(6)Z(7)Z(8)Z(9)Z(10)Z(11)Z(12)Z(13)Z(14)Z(15)Z(16)Z(17)Z(18)Z(19)Z(20)Z(21)Z(22)Z(23) "dec %0\\n jnz 1b\\n":"+r"(n)::"memory");}\n')
out.append('int main(){ for(int rr=0;rr<3;rr++){ long n=128*200000; double t=now(); pk(n/24*8); double tp=now()-t; double peak=(n/24*8)*24*32/tp/1e9; printf("peak %.1f", peak);\n')
for (name,R,C,e) in vs:
    out.append(f' t=now(); {name}(n/{R*C}*8, A, B); {{ double tt=now()-t; printf("  {name} %.3f", (double)(n/{R*C}*8/128*128)*{R*C}*32/tt/1e9/peak); }}\n')
out.append(' printf("\\n");}}\n')
dest = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[2] / 'target' / 'avx512_tiles.c')
dest.parent.mkdir(parents=True, exist_ok=True)
dest.write_text(''.join(out))
