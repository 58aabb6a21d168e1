// Command webhook is the clusters test's in-cluster admission and conversion webhook: a
// Deployment serves it over TLS (a CA the test makes), and the API servers must reach it through
// its Service. Standard library only, so the test builds it offline in seconds.
//
//	/validate  refuses a ConfigMap that has a data key "forbidden", with a message naming it
//	/mutate    labels every ConfigMap it sees with anodyne.test/mutated=yes (a JSON patch)
//	/convert   converts Widgets between test.anodyne.io/v1 (spec.size) and v2 (spec.dimensions.width)
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
)

type object = map[string]any

func main() {
	addr := flag.String("addr", ":8443", "listen address")
	cert := flag.String("cert", "/tls/tls.crt", "serving certificate")
	key := flag.String("key", "/tls/tls.key", "serving key")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/validate", review(validate))
	mux.HandleFunc("/mutate", review(mutate))
	mux.HandleFunc("/convert", convert)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	log.Printf("webhook listening on %s", *addr)
	log.Fatal(http.ListenAndServeTLS(*addr, *cert, *key, mux))
}

// review decodes an admission.k8s.io/v1 AdmissionReview, lets decide fill the response and
// answers with the same review carrying it.
func review(decide func(req object, resp object)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := decode(w, r, "AdmissionReview")
		if req == nil {
			return
		}
		resp := object{"uid": req["uid"], "allowed": true}
		decide(req, resp)
		log.Printf("%s %s %v/%v allowed=%v", r.URL.Path, req["operation"], req["namespace"], req["name"], resp["allowed"])
		reply(w, object{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
	}
}

func validate(req object, resp object) {
	obj, _ := req["object"].(object)
	data, _ := obj["data"].(object)
	if _, bad := data["forbidden"]; bad {
		resp["allowed"] = false
		resp["status"] = object{"code": 403, "message": "anodyne test webhook: the data key \"forbidden\" is not allowed"}
	}
}

func mutate(req object, resp object) {
	obj, _ := req["object"].(object)
	meta, _ := obj["metadata"].(object)
	var patch []object
	if _, ok := meta["labels"].(object); !ok {
		patch = append(patch, object{"op": "add", "path": "/metadata/labels", "value": object{}})
	}
	patch = append(patch, object{"op": "add", "path": "/metadata/labels/anodyne.test~1mutated", "value": "yes"})
	raw, _ := json.Marshal(patch)
	resp["patchType"] = "JSONPatch"
	resp["patch"] = base64.StdEncoding.EncodeToString(raw)
}

// convert answers an apiextensions.k8s.io/v1 ConversionReview.
func convert(w http.ResponseWriter, r *http.Request) {
	req := decode(w, r, "ConversionReview")
	if req == nil {
		return
	}
	to, _ := req["desiredAPIVersion"].(string)
	objs, _ := req["objects"].([]any)
	out := make([]any, 0, len(objs))
	for _, o := range objs {
		obj, _ := o.(object)
		converted, err := widget(obj, to)
		if err != nil {
			reply(w, object{"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview", "response": object{"uid": req["uid"], "result": object{"status": "Failure", "message": err.Error()}}})
			return
		}
		out = append(out, converted)
	}
	log.Printf("/convert %d objects to %s", len(out), to)
	reply(w, object{"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview", "response": object{"uid": req["uid"], "convertedObjects": out, "result": object{"status": "Success"}}})
}

// widget moves a Widget's size between v1 (spec.size) and v2 (spec.dimensions.width).
func widget(obj object, to string) (object, error) {
	from, _ := obj["apiVersion"].(string)
	spec, _ := obj["spec"].(object)
	if spec == nil {
		spec = object{}
	}
	switch {
	case from == to:
	case to == "test.anodyne.io/v2":
		spec["dimensions"] = object{"width": spec["size"]}
		delete(spec, "size")
	case to == "test.anodyne.io/v1":
		dims, _ := spec["dimensions"].(object)
		spec["size"] = dims["width"]
		delete(spec, "dimensions")
	default:
		return nil, fmt.Errorf("cannot convert %s to %s", from, to)
	}
	obj["spec"] = spec
	obj["apiVersion"] = to
	return obj, nil
}

// decode reads a review's request; on bad input it answers 400 and returns nil.
func decode(w http.ResponseWriter, r *http.Request, kind string) object {
	var in object
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil
	}
	req, _ := in["request"].(object)
	if req == nil {
		http.Error(w, "no request in the "+kind, http.StatusBadRequest)
	}
	return req
}

func reply(w http.ResponseWriter, body object) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}
