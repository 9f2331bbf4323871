package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	"knative.dev/eventing/pkg/apis/feature"
	netapi "knative.dev/networking/pkg/apis/networking"
	netv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	servingcfg "knative.dev/serving/pkg/apis/config"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	routecfg "knative.dev/serving/pkg/reconciler/route/config"
	"knative.dev/serving/pkg/reconciler/route/domains"
	"knative.dev/serving/pkg/reconciler/service/resources"
	kindv1alpha4 "sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	sigsyaml "sigs.k8s.io/yaml"
)

// checkAll reads the configuration among the documents first, then checks every other one.
func checkAll(docs []document) []result {
	results := make([]result, len(docs))
	config, err := defaultConfig()
	if err != nil {
		panic(fmt.Sprintf("upstream defaults do not parse: %v", err))
	}
	for i, d := range docs {
		if isConfigMap(d) {
			results[i] = newResult(d)
			checks, err := config.apply(d)
			record(&results[i], checks, err)
		}
	}
	for i, d := range docs {
		if !isConfigMap(d) {
			results[i] = check(d, config)
		}
	}
	return results
}

func record(r *result, checks []string, err error) {
	r.Checks = append(r.Checks, checks...)
	if err != nil {
		r.Error = err.Error()
	}
}

func check(d document, config *clusterConfig) result {
	r := newResult(d)
	switch {
	case d.APIVersion == "serving.knative.dev/v1" && d.Kind == "Service":
		domains, checks, err := checkService(d, config)
		r.Domains = domains
		record(&r, checks, err)
	case (d.APIVersion == "sources.knative.dev/v1" || d.APIVersion == "sources.knative.dev/v1beta1") && d.Kind == "KafkaSource":
		checks, err := checkKafkaSource(d, config)
		record(&r, checks, err)
	case d.APIVersion == "eventing.knative.dev/v1alpha1" && d.Kind == "KafkaSink":
		checks, err := checkKafkaSink(d, config)
		record(&r, checks, err)
	case d.APIVersion == "kind.x-k8s.io/v1alpha4" && d.Kind == "Cluster":
		checks, err := checkKindCluster(d)
		record(&r, checks, err)
	case isKnativeOrKind(d.group()):
		r.Error = fmt.Sprintf("%s %s: no check for this kind (add one to tests/knative-check)", d.APIVersion, d.Kind)
	default:
		r.Ignored = "not a Knative or kind resource"
	}
	return r
}

func isKnativeOrKind(group string) bool {
	return group == "kind.x-k8s.io" || group == "knative.dev" || strings.HasSuffix(group, ".knative.dev")
}

// checkService: what serving's defaulting and validation webhooks do to a Service when it is
// created, then the domains the route reconciler gives the Route the Service makes.
func checkService(d document, config *clusterConfig) ([]string, []string, error) {
	checks := []string{"strict decode into serving/v1 Service"}
	svc := &servingv1.Service{}
	if err := decodeStrict(d.YAML, svc); err != nil {
		return nil, checks, err
	}
	if svc.Namespace == "" {
		svc.Namespace = metav1.NamespaceDefault
	}
	ctx := servingcfg.ToContext(apis.WithinCreate(context.Background()), config.serving)
	svc.SetDefaults(ctx)
	checks = append(checks, "Service.SetDefaults")
	if err := svc.Validate(ctx); err != nil {
		return nil, append(checks, "Service.Validate"), err
	}
	checks = append(checks, "Service.Validate")

	route := resources.MakeRoute(svc)
	visibility := netv1alpha1.IngressVisibilityExternalIP
	if route.Labels[netapi.VisibilityLabelKey] == serving.VisibilityClusterLocal {
		visibility = netv1alpha1.IngressVisibilityClusterLocal
	}
	names := []string{""} // the default target; then every traffic tag
	for _, target := range route.Spec.Traffic {
		if target.Tag != "" {
			names = append(names, target.Tag)
		}
	}
	visibilities := map[string]netv1alpha1.IngressVisibility{}
	for _, name := range names {
		visibilities[name] = visibility
	}
	routeCtx := routecfg.ToContext(ctx, config.route)
	checks = append(checks, "route domains.GetAllDomainsAndTags")
	byDomain, err := domains.GetAllDomainsAndTags(routeCtx, route, names, visibilities)
	if err != nil {
		return nil, checks, err
	}
	rendered := make([]string, 0, len(byDomain))
	for domain := range byDomain {
		rendered = append(rendered, domain)
	}
	sort.Strings(rendered)
	return rendered, checks, nil
}

// kafkaResource holds the parts of a KafkaSource or KafkaSink upstream Go types exist for
// (eventing-kafka-broker's own types are not served by the Go module proxy).
type kafkaResource struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Sink                json.RawMessage `json:"sink"`
		CloudEventOverrides json.RawMessage `json:"ceOverrides"`
		Delivery            json.RawMessage `json:"delivery"`
	} `json:"spec"`
}

func decodeKafkaResource(d document) (*kafkaResource, error) {
	data, err := sigsyaml.YAMLToJSON(d.YAML)
	if err != nil {
		return nil, err
	}
	resource := &kafkaResource{}
	if err := json.Unmarshal(data, resource); err != nil {
		return nil, err
	}
	return resource, nil
}

// checkKafkaSource: the KafkaSource webhook's duck/v1 SourceSpec validation (sink and
// ceOverrides), and the DeliverySpec validation its ConsumerGroup gets from the Kafka webhook
// with the eventing feature flags.
func checkKafkaSource(d document, config *clusterConfig) ([]string, error) {
	resource, err := decodeKafkaResource(d)
	if err != nil {
		return nil, err
	}
	ctx := apis.WithinParent(apis.WithinCreate(context.Background()), resource.Metadata)
	checks := []string{"strict decode spec.sink into duck/v1 Destination"}
	source := duckv1.SourceSpec{}
	if len(resource.Spec.Sink) == 0 {
		return checks, apis.ErrMissingField("spec.sink")
	}
	if err := decodeJSONStrict(resource.Spec.Sink, &source.Sink); err != nil {
		return checks, fmt.Errorf("spec.sink: %w", err)
	}
	if len(resource.Spec.CloudEventOverrides) > 0 {
		checks = append(checks, "strict decode spec.ceOverrides into duck/v1 CloudEventOverrides")
		source.CloudEventOverrides = &duckv1.CloudEventOverrides{}
		if err := decodeJSONStrict(resource.Spec.CloudEventOverrides, source.CloudEventOverrides); err != nil {
			return checks, fmt.Errorf("spec.ceOverrides: %w", err)
		}
	}
	checks = append(checks, "duck/v1 SourceSpec.Validate")
	if err := source.Validate(ctx); err != nil {
		return checks, err.ViaField("spec")
	}
	return checkDelivery(ctx, resource, config, checks)
}

// checkDelivery: a delivery block, if any, as the Kafka webhook validates a ConsumerGroup's.
func checkDelivery(ctx context.Context, resource *kafkaResource, config *clusterConfig, checks []string) ([]string, error) {
	if len(resource.Spec.Delivery) == 0 {
		return checks, nil
	}
	checks = append(checks, "strict decode spec.delivery into eventing duck/v1 DeliverySpec")
	delivery := &eventingduckv1.DeliverySpec{}
	if err := decodeJSONStrict(resource.Spec.Delivery, delivery); err != nil {
		return checks, fmt.Errorf("spec.delivery: %w", err)
	}
	checks = append(checks, "eventing DeliverySpec.Validate with the eventing feature flags")
	if err := delivery.Validate(feature.ToContext(ctx, config.eventing)); err != nil {
		return checks, err.ViaField("spec", "delivery")
	}
	return checks, nil
}

// checkKafkaSink: a KafkaSink has no sink; its type is eventing-kafka-broker's alone, so only
// a delivery block (none is expected) would be checked here. The JSON schema of tests/deploy
// checks its fields.
func checkKafkaSink(d document, config *clusterConfig) ([]string, error) {
	resource, err := decodeKafkaResource(d)
	if err != nil {
		return nil, err
	}
	if len(resource.Spec.Sink) > 0 {
		return nil, apis.ErrDisallowedFields("spec.sink")
	}
	ctx := apis.WithinParent(apis.WithinCreate(context.Background()), resource.Metadata)
	return checkDelivery(ctx, resource, config, []string{})
}

// checkKindCluster decodes kind-config.yaml as `kind create cluster --config` does: gopkg.in/yaml.v3
// with known fields only into the public v1alpha4 Cluster, then kind's defaults.
func checkKindCluster(d document) ([]string, error) {
	checks := []string{"strict decode into kind v1alpha4 Cluster", "v1alpha4.SetDefaultsCluster"}
	cluster := &kindv1alpha4.Cluster{}
	decoder := yaml.NewDecoder(bytes.NewReader(d.YAML))
	decoder.KnownFields(true)
	if err := decoder.Decode(cluster); err != nil {
		return checks, err
	}
	kindv1alpha4.SetDefaultsCluster(cluster)
	return checks, nil
}
