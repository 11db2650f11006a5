package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/sirupsen/logrus"
)

// runCompose loads the compose files exactly as `docker compose config` does (compose-go: the
// compose-spec JSON schema, interpolation, normalization, the consistency check of references),
// with every profile enabled, then adds the checks `docker compose up` would only fail at run time.
func runCompose(args []string, out io.Writer) error {
	flags := flag.NewFlagSet("compose", flag.ContinueOnError)
	var env multiFlag
	flags.Var(&env, "env", "KEY=VALUE for interpolation (repeatable); the OS environment is not used")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() == 0 {
		return errors.New("compose needs at least one file")
	}
	warnings := captureWarnings()
	project, err := loadProject(flags.Args(), env)
	if err != nil {
		return err
	}
	if len(warnings.messages) > 0 {
		// compose-go warns (unset variables, obsolete `version`, YAML 1.1 booleans): treated as errors.
		return fmt.Errorf("compose warnings: %s", strings.Join(warnings.messages, "; "))
	}
	if problems := checkRunnable(project); len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	rendered, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = out.Write(append(rendered, '\n'))
	return err
}

func loadProject(files []string, env []string) (*types.Project, error) {
	workingDir, err := filepath.Abs(filepath.Dir(files[0]))
	if err != nil {
		return nil, err
	}
	options, err := cli.NewProjectOptions(files,
		cli.WithWorkingDirectory(workingDir),
		cli.WithEnv(env),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
		cli.WithProfiles([]string{"*"}),
	)
	if err != nil {
		return nil, err
	}
	return options.LoadProject(context.Background())
}

// checkRunnable reports what compose-go accepts but `docker compose up` would fail on (or silently
// get wrong): health conditions on services without a healthcheck, bind mounts of paths that do not
// exist (Docker would create empty root-owned directories), a missing build context or Dockerfile,
// and replicated services that pin a container name or a host port.
func checkRunnable(project *types.Project) []string {
	var problems []string
	names := project.ServiceNames()
	sort.Strings(names)
	for _, name := range names {
		service := project.Services[name]
		for target, dependency := range service.DependsOn {
			other := project.Services[target]
			if dependency.Condition == types.ServiceConditionHealthy &&
				(other.HealthCheck == nil || other.HealthCheck.Disable || len(other.HealthCheck.Test) == 0) {
				problems = append(problems, fmt.Sprintf(
					"service %q waits for %q to be healthy, but %q has no healthcheck", name, target, target))
			}
		}
		for _, volume := range service.Volumes {
			if volume.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(volume.Source); err != nil {
				problems = append(problems, fmt.Sprintf(
					"service %q mounts %s, which does not exist", name, volume.Source))
			}
		}
		if build := service.Build; build != nil {
			problems = append(problems, checkBuild(name, build)...)
		}
		if service.Deploy != nil && service.Deploy.Replicas != nil && *service.Deploy.Replicas > 1 {
			if service.ContainerName != "" {
				problems = append(problems, fmt.Sprintf(
					"service %q has replicas and a fixed container_name", name))
			}
			for _, port := range service.Ports {
				if port.Published != "" && !strings.Contains(port.Published, "-") {
					problems = append(problems, fmt.Sprintf(
						"service %q has replicas and publishes the fixed host port %s", name, port.Published))
				}
			}
		}
	}
	return problems
}

func checkBuild(name string, build *types.BuildConfig) []string {
	info, err := os.Stat(build.Context)
	if err != nil || !info.IsDir() {
		return []string{fmt.Sprintf("service %q builds from %s, which is not a directory", name, build.Context)}
	}
	dockerfile := build.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	if !filepath.IsAbs(dockerfile) {
		dockerfile = filepath.Join(build.Context, dockerfile)
	}
	if _, err := os.Stat(dockerfile); err != nil {
		return []string{fmt.Sprintf("service %q builds with %s, which does not exist", name, dockerfile)}
	}
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type warningCollector struct{ messages []string }

func (w *warningCollector) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (w *warningCollector) Fire(entry *logrus.Entry) error {
	w.messages = append(w.messages, entry.Message)
	return nil
}

func captureWarnings() *warningCollector {
	collector := &warningCollector{}
	logrus.SetOutput(io.Discard)
	logrus.AddHook(collector)
	return collector
}
