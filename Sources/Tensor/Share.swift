/// The contiguous share `[lo, hi)` of `n` items that rank `rank` of `size` takes: sizes differ by
/// at most one, in rank order. Every split over ranks (batches, windows, rows, buckets) uses it.
public func share(_ n: Int, rank: Int, size: Int) -> Range<Int> {
    (n * rank / size)..<(n * (rank + 1) / size)
}
