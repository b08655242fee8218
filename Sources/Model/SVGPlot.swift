import Foundation

/// A small SVG line/marker chart (loss curves, stable rank per layer): no dependencies,
/// deterministic output.
public struct SVGPlot {
    public struct Series {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: String
        public init(name: String, points: [(x: Double, y: Double)], color: String) {
            self.name = name; self.points = points; self.color = color
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    /// Tick labels for x (e.g. layer names); when set, x values are indices into it.
    public var xTickLabels: [String]?
    public var width = 900.0, height = 480.0

    public init(title: String, xLabel: String, yLabel: String, series: [Series], xTickLabels: [String]? = nil) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.series = series; self.xTickLabels = xTickLabels
    }

    public static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

    public func render() -> String {
        let left = 70.0, right = 20.0, top = 40.0, bottom = xTickLabels == nil ? 50.0 : 120.0
        let pts = series.flatMap { $0.points }.filter { $0.y.isFinite }
        var xmin = pts.map(\.x).min() ?? 0, xmax = pts.map(\.x).max() ?? 1
        var ymin = pts.map(\.y).min() ?? 0, ymax = pts.map(\.y).max() ?? 1
        if xmax == xmin { xmax += 1; xmin -= 1 }
        if ymax == ymin { ymax += 1; ymin -= 1 }
        let pad = (ymax - ymin) * 0.05
        ymin -= pad; ymax += pad
        let pw = width - left - right, ph = height - top - bottom
        func sx(_ x: Double) -> Double { left + (x - xmin) / (xmax - xmin) * pw }
        func sy(_ y: Double) -> Double { top + (1 - (y - ymin) / (ymax - ymin)) * ph }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(f(width / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(escape(title))</text>\n"
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#888\"/>\n"
        for i in 0...4 {
            let y = ymin + (ymax - ymin) * Double(i) / 4
            s += "<line x1=\"\(f(left))\" x2=\"\(f(left + pw))\" y1=\"\(f(sy(y)))\" y2=\"\(f(sy(y)))\" stroke=\"#eee\"/>\n"
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(sy(y) + 4))\" text-anchor=\"end\">\(String(format: "%.3g", y))</text>\n"
        }
        if let labels = xTickLabels {
            for (i, l) in labels.enumerated() {
                let x = sx(Double(i))
                s += "<text transform=\"translate(\(f(x)),\(f(top + ph + 8))) rotate(60)\" font-size=\"9\">\(escape(l))</text>\n"
            }
        } else {
            for i in 0...4 {
                let x = xmin + (xmax - xmin) * Double(i) / 4
                s += "<text x=\"\(f(sx(x)))\" y=\"\(f(top + ph + 18))\" text-anchor=\"middle\">\(String(format: "%.4g", x))</text>\n"
            }
        }
        s += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(height - 8))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        s += "<text transform=\"translate(16,\(f(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
        for (k, ser) in series.enumerated() {
            let p = ser.points.filter { $0.y.isFinite }
            guard !p.isEmpty else { continue }
            let d = p.enumerated().map { ($0.offset == 0 ? "M" : "L") + "\(f(sx($0.element.x))),\(f(sy($0.element.y)))" }.joined(separator: " ")
            s += "<path d=\"\(d)\" fill=\"none\" stroke=\"\(ser.color)\" stroke-width=\"1.5\"/>\n"
            if p.count <= 200 {
                for q in p { s += "<circle cx=\"\(f(sx(q.x)))\" cy=\"\(f(sy(q.y)))\" r=\"2.5\" fill=\"\(ser.color)\"/>\n" }
            }
            s += "<rect x=\"\(f(left + 10))\" y=\"\(f(top + 8 + Double(k) * 16))\" width=\"10\" height=\"10\" fill=\"\(ser.color)\"/>"
            s += "<text x=\"\(f(left + 26))\" y=\"\(f(top + 17 + Double(k) * 16))\">\(escape(ser.name))</text>\n"
        }
        s += "</svg>\n"
        return s
    }

    private func escape(_ t: String) -> String {
        t.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// Writes the chart atomically.
    public func write(to url: URL) throws { try writeAtomically(Data(render().utf8), to: url) }
}
