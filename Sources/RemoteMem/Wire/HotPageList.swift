/// The pages a migration source had in its cache at the switchover, for the destination to
/// fetch at once (`HOT_PAGES_PUT` / `HOT_PAGES_GET`): a hint, never data. Encoding: u32 run
/// count, then per run u64 first page and u32 page count (little-endian).
public struct HotPageList: Equatable, Sendable {
    public struct Run: Equatable, Sendable {
        public var firstPage: UInt64
        public var pageCount: UInt32

        public init(firstPage: UInt64, pageCount: UInt32) {
            self.firstPage = firstPage
            self.pageCount = pageCount
        }
    }

    public private(set) var runs: [Run] = []

    /// Runs of `pages` (any order, duplicates allowed), as many as fit `WireLimits.hotPagesBytesMax`.
    public init(pages: [UInt64]) {
        let runsMax = (WireLimits.hotPagesBytesMax - 8) / 12
        for page in pages.sorted() {
            if var last = runs.last, page <= last.firstPage + UInt64(last.pageCount) {
                if page == last.firstPage + UInt64(last.pageCount) && last.pageCount < UInt32.max {
                    last.pageCount += 1
                    runs[runs.count - 1] = last
                }
                continue
            }
            guard runs.count < runsMax else { break }
            runs.append(Run(firstPage: page, pageCount: 1))
        }
    }

    public var pageCount: Int { runs.reduce(0) { $0 + Int($1.pageCount) } }

    public func encoded() -> [UInt8] {
        var writer = PayloadWriter()
        writer.u32(UInt32(runs.count))
        for run in runs {
            writer.u64(run.firstPage)
            writer.u32(run.pageCount)
        }
        return writer.bytes
    }

    /// Decodes a list; runs past `pageCount` (a list for another size) are an error.
    public init(decoding bytes: [UInt8], pageCount: UInt64) throws(FrameError) {
        var reader = PayloadReader(bytes)
        let count = try reader.u32()
        guard Int(count) <= (WireLimits.hotPagesBytesMax - 4) / 12 else { throw .malformedPayload("\(count) hot-page runs") }
        for _ in 0..<count {
            let run = Run(firstPage: try reader.u64(), pageCount: try reader.u32())
            guard run.pageCount > 0, run.firstPage < pageCount, UInt64(run.pageCount) <= pageCount - run.firstPage else {
                throw .malformedPayload("hot-page run \(run.firstPage)+\(run.pageCount) outside \(pageCount) pages")
            }
            runs.append(run)
        }
        try reader.finish()
    }
}
