package tracelbexporter

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
)

// typeStr is the name used in collector configs: `exporters: tracelb: ...`.
var typeStr = component.MustNewType("tracelb")

// NewFactory returns the factory the Collector Builder registers.
func NewFactory() exporter.Factory {
	return exporter.NewFactory(typeStr, createDefaultConfig,
		exporter.WithTraces(createTraces, component.StabilityLevelDevelopment))
}

func createDefaultConfig() component.Config {
	otlp := otlpexporter.NewFactory().CreateDefaultConfig().(*otlpexporter.Config)
	// The template's endpoint is replaced per backend; a placeholder keeps its own Validate happy.
	otlp.ClientConfig.Endpoint = "per-backend:0"
	return &Config{RoutingKey: "traceID", Protocol: Protocol{OTLP: *otlp}}
}

func createTraces(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Traces, error) {
	lb := newRouter(set, cfg.(*Config))
	return exporterhelper.NewTraces(ctx, set, cfg, lb.consumeTraces,
		exporterhelper.WithStart(lb.start),
		exporterhelper.WithShutdown(lb.shutdown),
		exporterhelper.WithCapabilities(consumer.Capabilities{MutatesData: false}),
	)
}
