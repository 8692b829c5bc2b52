extension UnsafeBufferPointer {
    /// The address of the first element. An empty buffer has none (`baseAddress` is nil): asking for it is a
    /// programmer error and traps, as `baseAddress!` would, with a message.
    @inlinable
    package var start: UnsafePointer<Element> {
        guard let p = baseAddress else { preconditionFailure("an empty buffer has no start address") }
        return p
    }
}

extension UnsafeMutableBufferPointer {
    /// The address of the first element. An empty buffer has none (`baseAddress` is nil): asking for it is a
    /// programmer error and traps, as `baseAddress!` would, with a message.
    @inlinable
    package var start: UnsafeMutablePointer<Element> {
        guard let p = baseAddress else { preconditionFailure("an empty buffer has no start address") }
        return p
    }
}
