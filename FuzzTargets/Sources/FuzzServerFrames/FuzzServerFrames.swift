import MemoryServer
import MemxTesting
import RemoteMem

/// One input = the bytes a client sent on one connection to a fresh server holding one opened
/// volume (handle 1, epoch 1) on a 16-frame arena. Any violated invariant traps, which libFuzzer
/// records as a crash with the input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzServerFrames(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let harness: ServerFrameHarness
    do {
        harness = try ServerFrameHarness()
    } catch {
        fatalError("setting up the harness: \(error)")
    }
    if let violation = harness.run(stream: bytes) { fatalError("server frame invariant: \(violation)") }
    return 0
}

// SwiftPM links an executable with `main` aliased to `FuzzServerFrames_main`, so libFuzzer's own
// `main` is not used: this one hands the command line to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@_cdecl("FuzzServerFrames_main")
public func FuzzServerFramesMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzServerFrames(data, size) }
}
