package main

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/eventing/pkg/apis/feature"
	netcfg "knative.dev/networking/pkg/config"
	servingcfg "knative.dev/serving/pkg/apis/config"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
	routecfg "knative.dev/serving/pkg/reconciler/route/config"
)

const (
	servingNamespace  = "knative-serving"
	eventingNamespace = "knative-eventing"
)

// clusterConfig is what the webhooks and reconcilers read from their ConfigMaps: the code's
// defaults, overridden by the ConfigMaps given.
type clusterConfig struct {
	serving  *servingcfg.Config
	route    *routecfg.Config
	eventing feature.Flags
}

func defaultConfig() (*clusterConfig, error) {
	serving := servingcfg.FromContextOrDefaults(context.Background())
	domain, err := routecfg.NewDomainFromConfigMap(&corev1.ConfigMap{})
	if err != nil {
		return nil, err
	}
	network, err := netcfg.NewConfigFromMap(map[string]string{})
	if err != nil {
		return nil, err
	}
	flags, err := feature.NewFlagsConfigFromMap(map[string]string{})
	if err != nil {
		return nil, err
	}
	route := &routecfg.Config{Domain: domain, Network: network, Features: serving.Features}
	return &clusterConfig{serving: serving, route: route, eventing: flags}, nil
}

// isConfigMap: a ConfigMap of a Knative namespace, i.e. configuration rather than a resource.
func isConfigMap(d document) bool {
	return d.APIVersion == "v1" && d.Kind == "ConfigMap" &&
		(d.Namespace == servingNamespace || d.Namespace == eventingNamespace)
}

// apply parses one ConfigMap with the constructor upstream registers for its name (the same
// parse the configmap validation webhooks run) and makes it the configuration in use.
func (c *clusterConfig) apply(d document) ([]string, error) {
	cm := &corev1.ConfigMap{}
	if err := decodeStrict(d.YAML, cm); err != nil {
		return nil, err
	}
	key := d.Namespace + "/" + d.Name
	switch key {
	case servingNamespace + "/" + netcfg.ConfigMapName:
		network, err := netcfg.NewConfigFromConfigMap(cm)
		if err != nil {
			return nil, err
		}
		c.route.Network = network
		return []string{"networking config.NewConfigFromConfigMap"}, nil
	case servingNamespace + "/" + routecfg.DomainConfigName:
		domain, err := routecfg.NewDomainFromConfigMap(cm)
		if err != nil {
			return nil, err
		}
		c.route.Domain = domain
		return []string{"serving route config.NewDomainFromConfigMap"}, nil
	case servingNamespace + "/" + servingcfg.FeaturesConfigName:
		features, err := servingcfg.NewFeaturesConfigFromConfigMap(cm)
		if err != nil {
			return nil, err
		}
		c.serving.Features = features
		c.route.Features = features
		return []string{"serving config.NewFeaturesConfigFromConfigMap"}, nil
	case servingNamespace + "/" + servingcfg.DefaultsConfigName:
		defaults, err := servingcfg.NewDefaultsConfigFromConfigMap(cm)
		if err != nil {
			return nil, err
		}
		c.serving.Defaults = defaults
		return []string{"serving config.NewDefaultsConfigFromConfigMap"}, nil
	case servingNamespace + "/" + asconfig.ConfigName:
		autoscaler, err := asconfig.NewConfigFromConfigMap(cm)
		if err != nil {
			return nil, err
		}
		c.serving.Autoscaler = autoscaler
		return []string{"serving autoscaler config.NewConfigFromConfigMap"}, nil
	case eventingNamespace + "/" + feature.FlagsConfigName:
		flags, err := feature.NewFlagsConfigFromConfigMap(cm)
		if err != nil {
			return nil, err
		}
		c.eventing = flags
		return []string{"eventing feature.NewFlagsConfigFromConfigMap"}, nil
	}
	return nil, fmt.Errorf("ConfigMap %s: not a configuration this check reads", key)
}
