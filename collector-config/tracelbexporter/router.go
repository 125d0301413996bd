package tracelbexporter

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.uber.org/zap"
)

// router owns one OTLP/gRPC exporter per backend and splits each batch by trace ID.
type router struct {
	set       exporter.Settings
	cfg       *Config
	backends  []string
	seeds     []uint64
	exporters []exporter.Traces
}

func newRouter(set exporter.Settings, cfg *Config) *router {
	r := &router{set: set, cfg: cfg, backends: append([]string(nil), cfg.Resolver.Static.Hostnames...)}
	for _, b := range r.backends {
		h := fnv.New64a()
		_, _ = h.Write([]byte(b))
		r.seeds = append(r.seeds, h.Sum64())
	}
	return r
}

func (r *router) start(ctx context.Context, host component.Host) error {
	factory := otlpexporter.NewFactory()
	for i, endpoint := range r.backends {
		cfg := r.cfg.Protocol.OTLP // a copy of the template
		cfg.ClientConfig.Endpoint = endpoint
		set := exporter.Settings{
			ID:                component.NewIDWithName(factory.Type(), fmt.Sprintf("%s_backend%d", r.set.ID.String(), i)),
			TelemetrySettings: r.set.TelemetrySettings,
			BuildInfo:         r.set.BuildInfo,
		}
		exp, err := factory.CreateTraces(ctx, set, &cfg)
		if err != nil {
			return fmt.Errorf("backend %s: %w", endpoint, err)
		}
		if err := exp.Start(ctx, host); err != nil {
			return fmt.Errorf("backend %s: %w", endpoint, err)
		}
		r.exporters = append(r.exporters, exp)
	}
	r.set.Logger.Info("trace-ID routing ready", zap.Strings("backends", r.backends))
	return nil
}

func (r *router) shutdown(ctx context.Context) error {
	var errs error
	for _, exp := range r.exporters {
		errs = errors.Join(errs, exp.Shutdown(ctx))
	}
	return errs
}

// pick chooses a backend by rendezvous (highest random weight) hashing: stable for a trace ID, and
// adding or removing a backend only moves the traces that hashed to it.
func (r *router) pick(id pcommon.TraceID) int {
	return pickBackend(id, r.seeds)
}

func pickBackend(id pcommon.TraceID, seeds []uint64) int {
	best, bestScore := 0, uint64(0)
	for i, seed := range seeds {
		h := fnv.New64a()
		var s [8]byte
		for k := 0; k < 8; k++ {
			s[k] = byte(seed >> (8 * k))
		}
		_, _ = h.Write(s[:])
		_, _ = h.Write(id[:])
		score := mix64(h.Sum64())
		if i == 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// mix64 is a finaliser (splitmix64) so near-identical inputs spread evenly.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (r *router) consumeTraces(ctx context.Context, td ptrace.Traces) error {
	parts := splitByBackend(td, len(r.exporters), r.pick)
	var errs error
	for i, part := range parts {
		if part == nil {
			continue
		}
		if err := r.exporters[i].ConsumeTraces(ctx, *part); err != nil {
			errs = errors.Join(errs, fmt.Errorf("backend %s: %w", r.backends[i], err))
		}
	}
	return errs
}

// splitByBackend copies each span into the batch of its backend, keeping resource and scope.
func splitByBackend(td ptrace.Traces, n int, pick func(pcommon.TraceID) int) []*ptrace.Traces {
	out := make([]*ptrace.Traces, n)
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		destRS := make([]*ptrace.ResourceSpans, n)
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			destSS := make([]*ptrace.ScopeSpans, n)
			spans := ss.Spans()
			for k := 0; k < spans.Len(); k++ {
				span := spans.At(k)
				b := pick(span.TraceID())
				if out[b] == nil {
					t := ptrace.NewTraces()
					out[b] = &t
				}
				if destRS[b] == nil {
					d := out[b].ResourceSpans().AppendEmpty()
					rs.Resource().CopyTo(d.Resource())
					d.SetSchemaUrl(rs.SchemaUrl())
					destRS[b] = &d
				}
				if destSS[b] == nil {
					d := destRS[b].ScopeSpans().AppendEmpty()
					ss.Scope().CopyTo(d.Scope())
					d.SetSchemaUrl(ss.SchemaUrl())
					destSS[b] = &d
				}
				span.CopyTo(destSS[b].Spans().AppendEmpty())
			}
		}
	}
	return out
}
