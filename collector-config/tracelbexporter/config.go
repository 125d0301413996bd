// Package tracelbexporter routes every span of a trace to the same OTLP/gRPC backend.
//
// Why it exists: the contrib `loadbalancing` exporter is not served by the Go module proxy this
// project builds from, so this small exporter does the one thing the otel-tokenfix pipeline needs
// from it: trace-ID routing over a static list of `otel-tokenfix serve` instances. Its configuration
// mirrors the upstream exporter's (`routing_key`, `protocol.otlp`, `resolver.static.hostnames`), so a
// config written for it works with `loadbalancing` by renaming the exporter.
package tracelbexporter // import "github.com/otel-tokenfix/otel-tokenfix/collector-config/tracelbexporter"

import (
	"errors"
	"fmt"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
)

// Config mirrors the upstream load-balancing exporter's configuration (static resolver only).
type Config struct {
	// RoutingKey must be "traceID" (the default): all spans of a trace go to one backend.
	RoutingKey string `mapstructure:"routing_key"`
	// Protocol holds the OTLP/gRPC exporter template used for every backend (its endpoint is ignored).
	Protocol Protocol `mapstructure:"protocol"`
	// Resolver lists the backends.
	Resolver ResolverSettings `mapstructure:"resolver"`

	_ struct{}
}

// Protocol is the template for the per-backend exporters.
type Protocol struct {
	OTLP otlpexporter.Config `mapstructure:"otlp"`
}

// ResolverSettings names how backends are found; only a static list is supported.
type ResolverSettings struct {
	Static *StaticResolver `mapstructure:"static"`
}

// StaticResolver is a fixed list of host:port OTLP/gRPC endpoints.
type StaticResolver struct {
	Hostnames []string `mapstructure:"hostnames"`
}

var _ component.Config = (*Config)(nil)

// Validate rejects configurations this exporter cannot honour instead of silently misrouting.
func (c *Config) Validate() error {
	if c.RoutingKey != "" && c.RoutingKey != "traceID" {
		return fmt.Errorf("routing_key %q is not supported (only \"traceID\")", c.RoutingKey)
	}
	if c.Resolver.Static == nil || len(c.Resolver.Static.Hostnames) == 0 {
		return errors.New("resolver.static.hostnames must list at least one backend")
	}
	seen := map[string]bool{}
	for _, h := range c.Resolver.Static.Hostnames {
		if h == "" {
			return errors.New("resolver.static.hostnames contains an empty entry")
		}
		if seen[h] {
			return fmt.Errorf("backend %q is listed twice", h)
		}
		seen[h] = true
	}
	return nil
}
