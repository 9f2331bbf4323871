package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// document is one YAML document of a file and the type it declares.
type document struct {
	File       string
	Index      int
	YAML       []byte
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
}

// group is the API group of the document ("" for the core group).
func (d document) group() string {
	group, _, found := strings.Cut(d.APIVersion, "/")
	if !found {
		return ""
	}
	return group
}

// result is what the check says about one document (one JSON line of the output).
type result struct {
	File       string   `json:"file"`
	Index      int      `json:"index"`
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Name       string   `json:"name"`
	Checks     []string `json:"checks"`
	Domains    []string `json:"domains,omitempty"`
	Ignored    string   `json:"ignored,omitempty"`
	Error      string   `json:"error,omitempty"`
}

func newResult(d document) result {
	return result{File: d.File, Index: d.Index, APIVersion: d.APIVersion, Kind: d.Kind, Name: d.Name, Checks: []string{}}
}

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// readDocuments splits a YAML file into its non-empty documents (the index counts every
// document of the file, as the Python tests number them).
func readDocuments(path string) ([]document, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var docs []document
	for index := 0; ; index++ {
		chunk, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var h header
		if err := yaml.Unmarshal(chunk, &h); err != nil {
			return nil, fmt.Errorf("%s#%d: %w", path, index, err)
		}
		if h.APIVersion == "" && h.Kind == "" && isEmpty(chunk) {
			continue
		}
		docs = append(docs, document{
			File: path, Index: index, YAML: chunk,
			APIVersion: h.APIVersion, Kind: h.Kind, Name: h.Metadata.Name, Namespace: h.Metadata.Namespace,
		})
	}
}

// isEmpty: a document of comments only (yaml.safe_load_all gives None for it).
func isEmpty(chunk []byte) bool {
	var value any
	return yaml.Unmarshal(chunk, &value) == nil && value == nil
}

// decodeStrict decodes YAML into a Go type, refusing unknown and duplicate fields (what the
// API server's strict field validation and `kubectl apply --validate=strict` refuse).
func decodeStrict(data []byte, into any) error {
	return yaml.UnmarshalStrict(data, into)
}

// decodeJSONStrict decodes one JSON value into a Go type, refusing unknown fields.
func decodeJSONStrict(data []byte, into any) error {
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	return decoder.Decode(into)
}
