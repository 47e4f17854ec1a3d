// Prints, as one JSON object, the layout the C# reader (src/Quant/Kernels/CudaAllocatorLayout.cs) assumes for this
// PyTorch's c10::DeviceAllocator: the vtable slots of its virtuals and the DeviceStats offsets, as THIS compiler
// lays them out from THIS install's headers (c10/core/CachingDeviceAllocator.h, c10/core/Allocator.h).
// Itanium C++ ABI 2.3: a pointer to a virtual member function holds 1 + the function's byte offset in the vtable.
#include <c10/core/CachingDeviceAllocator.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>

namespace {
struct MemberPointer {
  std::uintptr_t ptr;
  std::ptrdiff_t adj;
};

template <typename F>
long slot(F f) {
  static_assert(sizeof(F) == sizeof(MemberPointer), "not an Itanium-ABI member function pointer");
  MemberPointer p;
  std::memcpy(&p, &f, sizeof p);
  if ((p.ptr & 1) == 0 || p.adj != 0) return -1;  // not virtual, or needs a this-adjustment
  return static_cast<long>((p.ptr - 1) / sizeof(void*));
}
}  // namespace

int main() {
  using Stats = c10::CachingDeviceAllocator::DeviceStats;
  Stats s{};
  std::printf(
      "{\"initialized_slot\": %ld, \"empty_cache_slot\": %ld, \"empty_cache_takes_mempool_id\": %d, "
      "\"get_device_stats_slot\": %ld, \"reset_accumulated_stats_slot\": %ld, "
      "\"reset_peak_stats_slot\": %ld, \"device_stats_bytes\": %zu, \"stat_bytes\": %zu, "
      "\"allocated_bytes_offset\": %zu, \"reserved_bytes_offset\": %zu, \"device_index_bytes\": %zu}\n",
      slot(&c10::DeviceAllocator::initialized), slot(&c10::DeviceAllocator::emptyCache),
      static_cast<int>(std::is_same_v<decltype(&c10::DeviceAllocator::emptyCache), void (c10::DeviceAllocator::*)(c10::MempoolId_t)>),
      slot(&c10::DeviceAllocator::getDeviceStats),
      slot(&c10::DeviceAllocator::resetAccumulatedStats), slot(&c10::DeviceAllocator::resetPeakStats), sizeof(Stats),
      sizeof(s.allocated_bytes[0]), offsetof(Stats, allocated_bytes), offsetof(Stats, reserved_bytes),
      sizeof(c10::DeviceIndex));
  return 0;
}
