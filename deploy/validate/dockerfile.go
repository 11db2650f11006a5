package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	digest "github.com/opencontainers/go-digest"
)

// runDockerfile runs BuildKit's own Dockerfile front end in lint mode (what `docker build --check`
// runs): the parser, every instruction's flags and arguments, stage references and the build checks.
// Base images are not fetched (offlineImages answers instead); any check warning or error fails.
func runDockerfile(args []string, out io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("dockerfile takes one file, got %d arguments", len(args))
	}
	source, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	sourceMap := llb.NewSourceMap(nil, args[0], "Dockerfile", source)
	sourceMap.Definition = &llb.Definition{}
	options := dockerfile2llb.ConvertOpt{SourceMap: sourceMap, MetaResolver: offlineImages{}}
	results, err := dockerfile2llb.DockerfileLint(context.Background(), source, options)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	var problems []string
	if results.Error != nil {
		problems = append(problems, results.Error.Message)
	}
	for _, warning := range results.Warnings {
		line := 0
		if warning.Location != nil && len(warning.Location.Ranges) > 0 {
			line = int(warning.Location.Ranges[0].Start.Line)
		}
		problems = append(problems, fmt.Sprintf("line %d: %s (%s)", line, warning.Detail, warning.RuleName))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %s", args[0], strings.Join(problems, "; "))
	}
	_, err = fmt.Fprintf(out, "%s: ok\n", args[0])
	return err
}

// offlineImages stands in for a registry: every base image is a plain Linux image with the usual PATH,
// so linting never reaches the network.
type offlineImages struct{}

func (offlineImages) ResolveImageConfig(
	_ context.Context, ref string, _ sourceresolver.Opt,
) (string, digest.Digest, []byte, error) {
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},` +
		`"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}}`)
	return ref, digest.FromString(ref), config, nil
}
