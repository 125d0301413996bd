package tracelbexporter

import (
	"testing"

	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestSplitKeepsEveryTraceOnOneBackend(t *testing.T) {
	seeds := newRouter(exporter.Settings{}, &Config{Resolver: ResolverSettings{Static: &StaticResolver{
		Hostnames: []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}}}}).seeds
	td := ptrace.NewTraces()
	for r := 0; r < 3; r++ {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutInt("r", int64(r))
		ss := rs.ScopeSpans().AppendEmpty()
		for s := 0; s < 200; s++ {
			span := ss.Spans().AppendEmpty()
			var id pcommon.TraceID
			id[15] = byte(s % 50)
			id[0] = byte(s % 7)
			span.SetTraceID(id)
		}
	}
	pick := func(id pcommon.TraceID) int { return pickBackend(id, seeds) }
	parts := splitByBackend(td, 3, pick)
	where := map[pcommon.TraceID]int{}
	total, used := 0, 0
	for b, part := range parts {
		if part == nil {
			continue
		}
		used++
		total += part.SpanCount()
		for i := 0; i < part.ResourceSpans().Len(); i++ {
			spans := part.ResourceSpans().At(i).ScopeSpans().At(0).Spans()
			for k := 0; k < spans.Len(); k++ {
				id := spans.At(k).TraceID()
				if prev, ok := where[id]; ok && prev != b {
					t.Fatalf("trace %x on backends %d and %d", id, prev, b)
				}
				where[id] = b
			}
		}
	}
	if total != td.SpanCount() {
		t.Fatalf("lost spans: %d of %d", total, td.SpanCount())
	}
	if used < 2 {
		t.Fatalf("all traces on one backend: the hash does not spread")
	}
}
