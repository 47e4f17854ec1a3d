// embedding.cu on the CPU: rows gathered by id (repeats, the first and last row, out-of-range ids as NaN rows), bf16
// and fp32 tables of several widths, more rows than the grid's y, against a scalar copy (bit-exact: a gather).
#include "embedding.cu"
#include "check_util.h"
#include <cstring>

int main()
{
    for (int elem : {2, 4})
        for (int cols : {8, 64, 4104})
        {
            if ((cols * elem) % 16) continue;
            const i64 vocab = 37, vectors = (i64)cols * elem / 16;
            std::vector<unsigned char> table((size_t)vocab * cols * elem);
            for (auto& b : table) b = (unsigned char)(qln_uniform(0, 255));
            std::vector<i64> ids = {0, vocab - 1, 5, 5, -1, vocab, 12, 0, 36};
            const i64 rows = (i64)ids.size();
            std::vector<unsigned char> out((size_t)rows * cols * elem, 0xAB);
            unsigned gx = (unsigned)((vectors + kThreads - 1) / kThreads), gy = 4;   // fewer y blocks than rows: the loop
            qln_launch(gx, gy, kThreads, [&] {
                if (elem == 2) qln_embedding_rows_bf16(table.data(), ids.data(), out.data(), rows, vectors, vocab);
                else qln_embedding_rows_f32(table.data(), ids.data(), out.data(), rows, vectors, vocab);
            });
            size_t rowBytes = (size_t)cols * elem, bad = 0;
            for (i64 r = 0; r < rows; r++)
            {
                const unsigned char* got = out.data() + r * rowBytes;
                if (ids[r] >= 0 && ids[r] < vocab) bad += std::memcmp(got, table.data() + ids[r] * rowBytes, rowBytes) != 0;
                else
                    for (int c = 0; c < cols; c++)
                    {
                        float f = elem == 2 ? from_bf16((unsigned short)(got[2 * c] | got[2 * c + 1] << 8)) : qln_as_float(*(const u32*)(got + 4 * c));
                        bad += !std::isnan(f);
                    }
            }
            char name[96];
            std::snprintf(name, sizeof name, "embedding rows %s cols=%d", elem == 2 ? "bf16" : "f32", cols);
            check(bad == 0, name);
            if (!bad) std::printf("ok   %s (%lld rows, bit-exact, NaN rows for ids out of range)\n", name, (long long)rows);
        }
    std::printf("%s\n", qln_failures ? "FAILED" : "all ok");
    return qln_failures ? 1 : 0;
}
