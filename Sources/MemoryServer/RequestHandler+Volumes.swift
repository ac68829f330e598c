import RemoteMem

/// The volume control opcodes: decode the payload in full (structure), then act (values).
extension RequestHandler {
    func control(_ opcode: Opcode, _ header: FrameHeader, _ payload: PayloadReader) throws(FrameError) -> Reply {
        var reader = payload
        switch opcode {
        case .volumeCreate:
            let sizeBytes = try reader.u64()
            let name = try Self.name(&reader)
            // Optional trailing flags (a client of this version sends them only when not 0).
            let flags = reader.remaining == 0 ? 0 : try reader.u32()
            try reader.finish()
            return outcome(header) { () throws(WireStatus) in
                try store.create(name: try Self.valid(name), sizeBytes: sizeBytes, deduplicate: try Self.deduplicates(flags))
            }
        case .volumeClone:
            let flags = try reader.u32()
            let template = try Self.name(&reader)
            let name = try Self.name(&reader)
            try reader.finish()
            do {
                let result = try store.clone(template: try Self.valid(template), name: try Self.valid(name),
                                             deduplicate: try Self.deduplicates(flags))
                return .ok(header, bytes: result.encoded)
            } catch {
                return .status(error, to: header)
            }
        case .volumeDedupStat:
            let name = try Self.name(&reader)
            try reader.finish()
            do {
                return .ok(header, bytes: try store.volumeDedupStatistics(name: try Self.valid(name)).encoded)
            } catch {
                return .status(error, to: header)
            }
        case .volumeOpen:
            let minimumEpoch = try reader.u64()
            let name = try Self.name(&reader)
            try reader.finish()
            return open(header, name: name, minimumEpoch: minimumEpoch)
        case .volumeClose:
            try reader.finish()
            return outcome(header) { () throws(WireStatus) in try store.close(handle: header.volume, epoch: header.epoch) }
        case .volumeDelete:
            let name = try Self.name(&reader)
            try reader.finish()
            return outcome(header) { () throws(WireStatus) in try store.delete(name: try Self.valid(name)) }
        case .volumeStat:
            let name = try Self.name(&reader)
            try reader.finish()
            return volumeStat(header, name: name)
        case .volumeList:
            try reader.finish()
            return volumeList(header)
        case .metadataPut:
            let expectedVersion = try reader.u64()
            let newVersion = try reader.u64()
            let metadata = try reader.blob(limit: WireLimits.metadataBytesMax)
            try reader.finish()
            return outcome(header) { () throws(WireStatus) in
                try store.putMetadata(handle: header.volume, epoch: header.epoch, expectedVersion: expectedVersion,
                                      newVersion: newVersion, metadata: metadata)
            }
        case .hotPagesPut:
            let list = try reader.blob(limit: WireLimits.hotPagesBytesMax)
            try reader.finish()
            return outcome(header) { () throws(WireStatus) in try store.putHotPages(handle: header.volume, epoch: header.epoch, list: list) }
        case .hotPagesGet:
            try reader.finish()
            do {
                var writer = PayloadWriter()
                writer.blob(try store.hotPages(handle: header.volume, epoch: header.epoch))
                return .ok(header, bytes: writer.bytes)
            } catch {
                return .status(error, to: header)
            }
        case .hello, .ping, .serverStat, .serverDrain, .auth, .dedupStat, .read, .write, .trim:
            preconditionFailure("\(opcode) is not a volume control opcode")
        }
    }

    private func open(_ header: FrameHeader, name: String?, minimumEpoch: UInt64) -> Reply {
        let opened: OpenedVolume
        do {
            opened = try store.open(name: try Self.valid(name), minimumEpoch: minimumEpoch)
        } catch {
            return .status(error, to: header)
        }
        var writer = PayloadWriter()
        writer.u64(opened.sizeBytes)
        writer.u64(opened.metadataVersion)
        writer.blob(opened.metadata)
        var reply = Reply.ok(header, bytes: writer.bytes)
        reply.header.volume = opened.handle
        reply.header.epoch = opened.epoch
        return reply
    }

    private func volumeStat(_ header: FrameHeader, name: String?) -> Reply {
        let status: VolumeStatus
        do {
            status = try store.stat(name: try Self.valid(name))
        } catch {
            return .status(error, to: header)
        }
        var writer = PayloadWriter()
        writer.u64(status.sizeBytes)
        writer.u64(status.storedPages)
        writer.u64(status.epoch)
        writer.u64(status.metadataVersion)
        return .ok(header, bytes: writer.bytes)
    }

    private func volumeList(_ header: FrameHeader) -> Reply {
        let volumes = store.list()
        var writer = PayloadWriter()
        writer.u32(UInt32(volumes.count))
        for volume in volumes {
            writer.u64(volume.sizeBytes)
            writer.u64(volume.storedPages)
            writer.name(volume.name)
        }
        return .ok(header, bytes: writer.bytes)
    }

    /// A u16-length name: its structure is checked here (the bytes must be there), its value
    /// later (`valid`), so a bad name is `INVALID`, not a closed connection. Nil if not a valid
    /// volume name.
    static func name(_ reader: inout PayloadReader) throws(FrameError) -> String? {
        let length = Int(try reader.u16())
        let bytes = try reader.raw(length)
        let name = String(decoding: bytes, as: UTF8.self)
        return length <= WireLimits.nameBytesMax && WireLimits.isValidName(name) ? name : nil
    }

    /// The de-duplication policy of volume `flags` (`DedupMessages`): `INVALID` for an unknown bit.
    static func deduplicates(_ flags: UInt32) throws(WireStatus) -> Bool {
        guard flags & ~DedupMessages.volumeFlagsKnown == 0 else { throw .invalid }
        return flags & DedupMessages.volumeFlagNoDedup == 0
    }

    /// `name`, or `INVALID` if it was not a valid volume name.
    static func valid(_ name: String?) throws(WireStatus) -> String {
        guard let name else { throw .invalid }
        return name
    }
}
