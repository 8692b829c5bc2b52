import CheckpointIO
import Foundation
import Yams

extension MergeConfigParser {
    static func parameterBlock(_ node: Node, file: String) throws(MergeError) -> ParameterBlock {
        var block = ParameterBlock()
        if case .scalar(let s) = node, s.string.isEmpty || s.string == "null" || s.string == "~" { return block }
        for (key, keyNode, value) in try mapping(node, file: file, what: "'parameters'") {
            block.settings[key] = try setting(value, file: file, name: key)
            block.lines[key] = line(keyNode)
        }
        return block
    }

    static func scalarValue(_ node: Node, file: String, name: String) throws(MergeError) -> ParameterValue {
        guard case .scalar(let s) = node else {
            throw fail(
                .invalidConfig, file, node,
                "parameter '\(name)' must be a number, a boolean, a list or {filter, value}.")
        }
        if s.tag == Tag(.bool) || ["true", "false", "True", "False"].contains(s.string), let b = node.bool {
            return .bool(b)
        }
        if let d = node.float ?? Double(s.string) { return .number(d) }
        throw fail(.invalidConfig, file, node, "parameter '\(name)' is '\(s.string)'; expected a number or a boolean.")
    }

    static func setting(_ node: Node, file: String, name: String) throws(MergeError) -> ParameterSetting {
        switch node {
        case .scalar:
            return .value(try scalarValue(node, file: file, name: name))
        case .sequence(let seq):
            if seq.allSatisfy({ if case .scalar = $0 { true } else { false } }) {
                var values: [ParameterValue] = []
                for n in seq { values.append(try scalarValue(n, file: file, name: name)) }
                return .gradient(values)
            }
            var conds: [ParameterSetting.Conditional] = []
            for n in seq { conds.append(try conditional(n, file: file, name: name)) }
            return .conditional(conds)
        case .mapping:
            return .conditional([try conditional(node, file: file, name: name)])
        case .alias:
            throw fail(.invalidConfig, file, node, "YAML aliases are not supported in parameter '\(name)'.")
        }
    }

    static func conditional(_ node: Node, file: String, name: String) throws(MergeError) -> ParameterSetting.Conditional
    {
        var filter: String?
        var value: ParameterSetting?
        for (key, keyNode, v) in try mapping(node, file: file, what: "a conditional value of '\(name)'") {
            switch key {
            case "filter": filter = try string(v, file: file, key: "filter")
            case "value":
                if case .mapping = v {
                    throw fail(
                        .invalidConfig, file, v,
                        "the value of a conditional '\(name)' must be a number, boolean or list.")
                }
                value = try setting(v, file: file, name: name)
            default:
                throw fail(
                    .unknownKey, file, keyNode,
                    "unknown key '\(key)' in a conditional value of '\(name)'; expected filter, value.")
            }
        }
        guard let value else {
            throw fail(.missingParameter, file, node, "a conditional value of '\(name)' has no 'value'.")
        }
        return .init(filter: filter, value: value)
    }
}
