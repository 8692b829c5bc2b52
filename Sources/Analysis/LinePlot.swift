import Foundation

/// A small hand-written SVG line chart: x and y axes with ticks and a grid, one polyline per series, a legend.
public struct LinePlot: Sendable {
    public struct Series: Sendable {
        public let label: String
        public let color: String
        public let dashed: Bool
        public let points: [(x: Double, y: Double)]

        public init(label: String, color: String, dashed: Bool = false, points: [(x: Double, y: Double)]) {
            self.label = label
            self.color = color
            self.dashed = dashed
            self.points = points
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var xRange: ClosedRange<Double>
    public var yRange: ClosedRange<Double>
    public var series: [Series]

    public init(
        title: String, xLabel: String, yLabel: String, xRange: ClosedRange<Double>, yRange: ClosedRange<Double>,
        series: [Series]
    ) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.xRange = xRange
        self.yRange = yRange
        self.series = series
    }

    /// The SVG document (UTF-8 text), 720 × 460 px.
    public func svg() -> String {
        let w = 720.0, h = 460.0
        let left = 70.0, right = 190.0, top = 40.0, bottom = 60.0
        let pw = w - left - right, ph = h - top - bottom
        func px(_ x: Double) -> Double { left + (x - xRange.lowerBound) / (xRange.upperBound - xRange.lowerBound) * pw }
        func py(_ y: Double) -> Double {
            top + ph - (y - yRange.lowerBound) / (yRange.upperBound - yRange.lowerBound) * ph
        }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;")
        }
        var s = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" viewBox="0 0 \(Int(w)) \(Int(h))" font-family="Helvetica, Arial, sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(f(left + pw / 2))" y="22" text-anchor="middle" font-size="15">\(esc(title))</text>

            """
        for k in 0...10 {
            let x = xRange.lowerBound + Double(k) / 10 * (xRange.upperBound - xRange.lowerBound)
            let y = yRange.lowerBound + Double(k) / 10 * (yRange.upperBound - yRange.lowerBound)
            s +=
                "<line x1=\"\(f(px(x)))\" y1=\"\(f(top))\" x2=\"\(f(px(x)))\" y2=\"\(f(top + ph))\" stroke=\"#e5e5e5\"/>\n"
            s +=
                "<line x1=\"\(f(left))\" y1=\"\(f(py(y)))\" x2=\"\(f(left + pw))\" y2=\"\(f(py(y)))\" stroke=\"#e5e5e5\"/>\n"
            if k % 2 == 0 {
                s +=
                    "<text x=\"\(f(px(x)))\" y=\"\(f(top + ph + 18))\" text-anchor=\"middle\">\(String(format: "%.1f", x))</text>\n"
                s +=
                    "<text x=\"\(f(left - 8))\" y=\"\(f(py(y) + 4))\" text-anchor=\"end\">\(String(format: "%.1f", y))</text>\n"
            }
        }
        s +=
            "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#333\"/>\n"
        s += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(h - 16))\" text-anchor=\"middle\">\(esc(xLabel))</text>\n"
        s +=
            "<text transform=\"translate(18 \(f(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\">\(esc(yLabel))</text>\n"
        for (i, se) in series.enumerated() {
            let pts = se.points.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            let dash = se.dashed ? " stroke-dasharray=\"6 4\"" : ""
            s += "<polyline points=\"\(pts)\" fill=\"none\" stroke=\"\(se.color)\" stroke-width=\"2\"\(dash)/>\n"
            for p in se.points {
                s += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"2.2\" fill=\"\(se.color)\"/>\n"
            }
            let ly = top + 10 + Double(i) * 20
            s +=
                "<line x1=\"\(f(left + pw + 14))\" y1=\"\(f(ly))\" x2=\"\(f(left + pw + 40))\" y2=\"\(f(ly))\" stroke=\"\(se.color)\" stroke-width=\"2\"\(dash)/>\n"
            s += "<text x=\"\(f(left + pw + 46))\" y=\"\(f(ly + 4))\">\(esc(se.label))</text>\n"
        }
        s += "</svg>\n"
        return s
    }
}
