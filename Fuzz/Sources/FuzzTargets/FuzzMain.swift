import CFuzzDriver

#if canImport(Glibc)
    import Glibc
#endif

/// One libFuzzer binary for every parser of untrusted input; `TSWITCH_FUZZ_TARGET` picks the target
/// (`safetensors`, `gguf`, `index`, `pack`, `router`, `yaml`, `tokenizer`; `selftest` crashes on purpose). Every target must return a value or throw its module's typed error:
/// a crash, trap, sanitizer report, timeout or out-of-memory is a finding. `scripts/fuzz` builds and runs it.
@main
enum FuzzMain {
    nonisolated(unsafe) static var target: FuzzTarget = .safetensors

    static func main() {
        let name = getenv("TSWITCH_FUZZ_TARGET").map { String(cString: $0) } ?? "safetensors"
        guard let t = FuzzTarget(rawValue: name) else {
            print(
                "fuzz-tswitch: unknown TSWITCH_FUZZ_TARGET '\(name)'; expected one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))"
            )
            exit(2)
        }
        target = t
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(
            LLVMFuzzerRunDriver(&argc, &argv) { data, size in
                let bytes = UnsafeRawBufferPointer(start: data, count: size)
                switch FuzzMain.target {
                case .safetensors: fuzzSafeTensorsHeader(bytes)
                case .gguf: fuzzGGUF(bytes)
                case .index: fuzzIndex(bytes)
                case .pack: fuzzPack(bytes)
                case .router: fuzzRouter(bytes)
                case .yaml: fuzzYAML(bytes)
                case .tokenizer: fuzzTokenizer(bytes)
                case .selftest:
                    // `scripts/fuzz --selftest`: proves that a finding makes the run fail and leaves an artifact.
                    if size >= 5, bytes[0] == UInt8(ascii: "C"), bytes[4] == UInt8(ascii: "H") {
                        fatalError("self-test finding")
                    }
                }
                return 0
            })
    }
}

enum FuzzTarget: String, CaseIterable {
    case safetensors, gguf, index, pack, router, yaml, tokenizer, selftest
}
