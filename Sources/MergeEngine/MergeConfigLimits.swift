import CYaml

extension MergeConfigParser {
    /// Checks size, nesting depth, alias-expanded node count and document count on libyaml's event stream, before
    /// the recursive composer (Yams) or this parser walk the tree. Syntax errors are left to the composer, whose
    /// messages are better.
    static func checkLimits(_ yaml: String, file: String) throws(MergeError) {
        var bytes = Array(yaml.utf8)
        guard bytes.count <= Limits.maxBytes else {
            throw MergeError(
                .limitExceeded,
                "\(file): the configuration has \(bytes.count) bytes; at most \(Limits.maxBytes) are allowed.")
        }
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return }
        defer { yaml_parser_delete(&parser) }
        var failure: MergeError?
        bytes.withUnsafeMutableBufferPointer { b in
            yaml_parser_set_input_string(&parser, b.baseAddress, b.count)
            // Per open collection: its alias-expanded node count and anchor; anchors map to their expanded sizes.
            var open: [(count: Int, anchor: String?)] = []
            var anchored: [String: Int] = [:]
            var total = 0
            var documents = 0
            func anchorName(_ p: UnsafeMutablePointer<yaml_char_t>?) -> String? {
                p.map { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
            }
            // Counts `n` nodes; a leaf's count also goes to its parent (a collection's, when it closes).
            func add(_ n: Int, leaf: Bool, line: Int) -> MergeError? {
                total += n
                if leaf, !open.isEmpty { open[open.count - 1].count += n }
                guard total <= Limits.maxNodes else {
                    return MergeError(
                        .limitExceeded,
                        "\(file):\(line): the configuration expands to more than \(Limits.maxNodes) YAML nodes (aliases included), the limit."
                    )
                }
                return nil
            }
            var event = yaml_event_t()
            while failure == nil, yaml_parser_parse(&parser, &event) == 1 {
                defer { yaml_event_delete(&event) }
                let line = Int(event.start_mark.line) + 1
                switch event.type {
                case YAML_STREAM_END_EVENT:
                    return
                case YAML_DOCUMENT_START_EVENT:
                    documents += 1
                    if documents > Limits.maxDocuments {
                        failure = MergeError(
                            .limitExceeded, "\(file):\(line): more than \(Limits.maxDocuments) documents, the limit.")
                    }
                case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                    guard open.count < Limits.maxDepth else {
                        failure = MergeError(
                            .limitExceeded,
                            "\(file):\(line): the YAML nests deeper than \(Limits.maxDepth) levels, the limit.")
                        break
                    }
                    let anchor = anchorName(
                        event.type == YAML_SEQUENCE_START_EVENT
                            ? event.data.sequence_start.anchor : event.data.mapping_start.anchor)
                    failure = add(1, leaf: false, line: line)
                    open.append((1, anchor))
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    guard let closed = open.popLast() else { break }
                    if let a = closed.anchor { anchored[a] = closed.count }
                    if !open.isEmpty { open[open.count - 1].count += closed.count }
                case YAML_SCALAR_EVENT:
                    if let a = anchorName(event.data.scalar.anchor) { anchored[a] = 1 }
                    failure = add(1, leaf: true, line: line)
                case YAML_ALIAS_EVENT:
                    let size = anchorName(event.data.alias.anchor).flatMap { anchored[$0] } ?? 1
                    failure = add(size, leaf: true, line: line)
                default:
                    break
                }
            }
        }
        if let failure { throw failure }
    }
}
