/// The one loop that adds a switch to a tensor, shared by every path that applies switches: the in-memory switch
/// (`SwitchableModel`'s scatter and sweep), the switched-model writer (`SwitchApplier`) and the `t_switch` merge
/// method. Keeping the Float operations in one place is what makes those paths agree bit for bit.
///
/// One index list is added at a time: `w[indices[j]] += c` (a sign list of a T-Switch; the negative list is added
/// with `-c`, since x − c and x + (−c) are the same IEEE operation), or `w[indices[j]] += c · values[j]` (the stored
/// values of a random-mask switch).
public enum SwitchKernel {
    /// Adds entries `j` of one index list, from `start` while `j < stop` and `indices[j] < below`, optionally
    /// saving each overwritten value in `saved[j]`; returns the first `j` not processed.
    ///
    /// The two bounds serve the callers' loops: a parallel chunk of the list (`stop`), a tile of the tensor in
    /// index order (`below`), or the whole list (both open).
    ///
    /// `origin` is the flat index `w` points at: a caller switching one row of an embedding table into a row
    /// buffer passes the row's first index (entries below `origin` must be skipped by `start`).
    ///
    /// - Precondition: `indices` is strictly ascending (tiles) and every index processed is inside `w`.
    @inlinable
    @discardableResult
    public static func add(
        _ c: Float, at indices: UnsafeBufferPointer<UInt32>, times values: UnsafeBufferPointer<Float>? = nil,
        to w: UnsafeMutablePointer<Float>, origin: Int = 0, saving saved: UnsafeMutablePointer<Float>? = nil,
        from start: Int = 0, stop: Int? = nil, below: Int = .max
    ) -> Int {
        let stop = min(stop ?? indices.count, indices.count)
        var j = start
        if origin != 0 {
            // Only the row-gathering path (no undo) shifts indices.
            precondition(saved == nil, "a shifted add saves nothing")
            while j < stop, Int(indices[j]) < below {
                let i = Int(indices[j]) - origin
                if let v = values { w[i] = w[i] + c * v[j] } else { w[i] = w[i] + c }
                j += 1
            }
            return j
        }
        switch (values, saved) {
        case (let v?, let s?):
            while j < stop, Int(indices[j]) < below {
                let i = Int(indices[j])
                let old = w[i]
                s[j] = old
                w[i] = old + c * v[j]
                j += 1
            }
        case (let v?, nil):
            while j < stop, Int(indices[j]) < below {
                let i = Int(indices[j])
                w[i] = w[i] + c * v[j]
                j += 1
            }
        case (nil, let s?):
            while j < stop, Int(indices[j]) < below {
                let i = Int(indices[j])
                let old = w[i]
                s[j] = old
                w[i] = old + c
                j += 1
            }
        case (nil, nil):
            while j < stop, Int(indices[j]) < below {
                let i = Int(indices[j])
                w[i] = w[i] + c
                j += 1
            }
        }
        return j
    }

    /// The first position in ascending `a` whose value is ≥ `x`: where a tile or a row starts in an index list.
    @inlinable
    public static func lowerBound(_ a: UnsafeBufferPointer<UInt32>, _ x: UInt32) -> Int {
        var lo = 0
        var hi = a.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if a[mid] < x { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// A T-Switch on a whole tensor: `+c` at every positive index, then `−c` at every negative one.
    public static func addSigns(
        _ c: Float, positive: [UInt32], negative: [UInt32], to w: UnsafeMutableBufferPointer<Float>
    ) {
        guard let base = w.baseAddress else { return }
        positive.withUnsafeBufferPointer { _ = add(c, at: $0, to: base) }
        negative.withUnsafeBufferPointer { _ = add(-c, at: $0, to: base) }
    }

    /// A random-mask switch on a whole tensor: `+c · values[j]` at `indices[j]`.
    public static func addValues(
        _ c: Float, at indices: [UInt32], values: [Float], to w: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(indices.count == values.count, "one value per index")
        guard let base = w.baseAddress else { return }
        indices.withUnsafeBufferPointer { ib in
            values.withUnsafeBufferPointer { _ = add(c, at: ib, times: $0, to: base) }
        }
    }
}
