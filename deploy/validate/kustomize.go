package main

import (
	"fmt"
	"io"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// runKustomize renders DIR's kustomization with the kustomize library that `kubectl apply -k` embeds.
func runKustomize(args []string, out io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("kustomize takes one directory, got %d arguments", len(args))
	}
	kustomizer := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := kustomizer.Run(filesys.MakeFsOnDisk(), args[0])
	if err != nil {
		return fmt.Errorf("kustomize %s: %w", args[0], err)
	}
	rendered, err := resources.AsYaml()
	if err != nil {
		return fmt.Errorf("kustomize %s: %w", args[0], err)
	}
	_, err = out.Write(rendered)
	return err
}
