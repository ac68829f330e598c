import MemxTesting

/// One session (memfds, a socketpair, a block device) for the whole run; each input starts a
/// new connection on it. An input is a sequence of records `[fd count u8][header][payload]`
/// (`VhostUserHarness.run(records:)`). Any violated invariant traps.
nonisolated(unsafe) let harness: VhostUserHarness = {
    do { return try VhostUserHarness() } catch { fatalError("setting up the harness: \(error)") }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVhostUser(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    do {
        if let violation = try harness.run(records: bytes) { fatalError("vhost-user invariant: \(violation)") }
    } catch {
        fatalError("passing fds: \(error)")
    }
    return 0
}

// SwiftPM links an executable with `main` aliased to `FuzzVhostUser_main`, so libFuzzer's own
// `main` is not used: this one hands the command line to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@_cdecl("FuzzVhostUser_main")
public func FuzzVhostUserMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzVhostUser(data, size) }
}
