// Command knative-check runs Knative's own admission and reconciler code on manifests, offline.
//
//	knative-check FILE...
//
// The ConfigMaps of the namespaces knative-serving and knative-eventing among the files are the
// cluster's configuration (the files scripts/kind-up.sh patches into the release's ConfigMaps);
// every other document is checked with it:
//
//   - a Knative Service is strictly decoded into serving's v1.Service, defaulted and validated
//     as serving's webhook does, and its Route's domains are rendered as the route reconciler
//     renders them (config-network's domain-template, config-domain);
//   - a KafkaSource's sink goes through duck/v1 SourceSpec validation (the KafkaSource webhook
//     calls it) and its delivery through eventing's DeliverySpec.Validate with the eventing
//     feature flags (the Kafka webhook validates the ConsumerGroup made from it so);
//   - kind's v1alpha4 Cluster is strictly decoded and defaulted as `kind create cluster` does.
//
// It prints one JSON line per document and exits 1 when a document fails, 2 when a file cannot
// be read. Kinds outside the Knative and kind API groups are reported as ignored.
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: knative-check FILE...")
		os.Exit(2)
	}
	var docs []document
	for _, path := range os.Args[1:] {
		read, err := readDocuments(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "knative-check: %v\n", err)
			os.Exit(2)
		}
		docs = append(docs, read...)
	}
	results := checkAll(docs)
	out := json.NewEncoder(os.Stdout)
	failed := false
	for _, r := range results {
		if err := out.Encode(r); err != nil {
			fmt.Fprintf(os.Stderr, "knative-check: %v\n", err)
			os.Exit(2)
		}
		failed = failed || r.Error != ""
	}
	if failed {
		os.Exit(1)
	}
}
