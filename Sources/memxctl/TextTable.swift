/// A plain-text table for the human output: a header row and aligned columns, two spaces apart,
/// text columns aligned left and number columns right.
struct TextTable {
    /// How a column's cells are aligned.
    enum Alignment { case left, right }

    private let headers: [String]
    private let alignments: [Alignment]
    private var rows: [[String]] = []

    /// A table with `columns` (title and alignment), in order.
    init(_ columns: [(String, Alignment)]) {
        headers = columns.map(\.0)
        alignments = columns.map(\.1)
    }

    /// Appends a row; missing cells are empty, extra cells are dropped.
    mutating func add(_ cells: [String]) {
        rows.append((0..<headers.count).map { $0 < cells.count ? cells[$0] : "" })
    }

    /// The table as lines with no trailing spaces.
    var lines: [String] {
        let widths = (0..<headers.count).map { column in
            ([headers] + rows).map { $0[column].count }.max() ?? 0
        }
        return ([headers] + rows).map { row in
            var line = ""
            for (column, cell) in row.enumerated() {
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                if column > 0 { line += "  " }
                line += alignments[column] == .left ? cell + padding : padding + cell
            }
            while line.hasSuffix(" ") { line.removeLast() }
            return line
        }
    }

    /// Prints the table to stdout.
    func print() { for line in lines { Swift.print(line) } }
}
