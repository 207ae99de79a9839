package main

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// build is an ESXi release as the API reports it: version "8.0.3", build "24784735".
type build struct{ Version, Build string }

var (
	versionBuild = regexp.MustCompile(`^(\d+\.\d+\.\d+)-(\d+)$`)
	// VMware's offline bundle names: VMware-ESXi-8.0U3f-24784735-depot.zip, VMware-ESXi-8.0-20513097-depot.zip.
	bundleName = regexp.MustCompile(`^VMware-ESXi-(\d+)\.(\d+)(?:U(\d+)[a-z]?)?-(\d+)-depot\.zip$`)
)

func parseBuilds(s string) ([]build, error) {
	var out []build
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		m := versionBuild.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("%q is not VERSION-BUILD (e.g. 8.0.3-24784735)", part)
		}
		out = append(out, build{m[1], m[2]})
	}
	return out, nil
}

// bundleBuild reads the release an offline bundle installs from its file name.
func bundleBuild(name string) (build, bool) {
	m := bundleName.FindStringSubmatch(name)
	if m == nil {
		return build{}, false
	}
	update := m[3]
	if update == "" {
		update = "0"
	}
	return build{fmt.Sprintf("%s.%s.%s", m[1], m[2], update), m[4]}, true
}

func family(version string) string {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return version
	}
	return parts[0] + "." + parts[1]
}

func setProduct(h *simulator.HostSystem, b build) {
	p := esx.HostConfigInfo.Product
	p.Version, p.Build = b.Version, b.Build
	p.FullName = fmt.Sprintf("VMware ESXi %s build-%s", b.Version, b.Build)
	p.ApiVersion = b.Version + ".0"
	p.LicenseProductVersion = b.Version
	h.Config.Product = p
	summary := p // the summary gets its own copy: vcsim's template shares one among all hosts
	h.Summary.Config.Product = &summary
}

// labHost is one host's added state: the build a patch staged, applied by the next reboot.
type labHost struct {
	host    *simulator.HostSystem
	pending *build
}

// extendHosts gives every host its build and the managed objects vcsim lacks.
func extendHosts(r *simulator.Registry, builds []build) {
	var hosts []*simulator.HostSystem
	for _, e := range r.All("HostSystem") {
		hosts = append(hosts, e.(*simulator.HostSystem))
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	byValue := map[string]*labHost{}
	for i, h := range hosts {
		b := build{h.Config.Product.Version, h.Config.Product.Build}
		if len(builds) > 0 {
			b = builds[i%len(builds)]
		}
		setProduct(h, b)
		lh := &labHost{host: h}
		byValue[h.Self.Value] = lh
		id := h.Self.Value
		h.ConfigManager.ServiceSystem = put(r, newServiceSystem(h, id))
		h.ConfigManager.DateTimeSystem = put(r, newDateTimeSystem(h, id))
		h.ConfigManager.HostAccessManager = put(r, newAccessManager(h, id))
		h.ConfigManager.PatchManager = put(r, &PatchManager{
			HostPatchManager: mo.HostPatchManager{Self: ref("HostPatchManager", "patchManager-"+id)}, lh: lh})
	}
	// vcsim leaves two enums of a VM's runtime empty, which pyVmomi cannot read (so it cannot
	// read vm.runtime at all); vCenter reports these values for a VM without FT or recording.
	for _, e := range r.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		for _, rt := range []*types.VirtualMachineRuntimeInfo{&vm.Runtime, &vm.Summary.Runtime} {
			if rt.FaultToleranceState == "" {
				rt.FaultToleranceState = types.VirtualMachineFaultToleranceStateNotConfigured
			}
			if rt.RecordReplayState == "" {
				rt.RecordReplayState = types.VirtualMachineRecordReplayStateInactive
			}
		}
	}
	// vcsim's HostSystem has no RebootHost_Task. A call to it goes to a labHostSystem instead;
	// vcsim dispatches a logged-in call to the session's own objects first, so the wrapper is
	// put there (it stays: it behaves as the host for every other call and property).
	r.Handler = func(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		lh := byValue[m.This.Value]
		if m.Name != "RebootHost_Task" || m.This.Type != "HostSystem" || lh == nil {
			return nil, nil
		}
		wrapper := &labHostSystem{HostSystem: lh.host, lh: lh}
		if ctx.Session != nil && ctx.Session.Registry.Get(m.This) == nil {
			ctx.Session.Put(wrapper)
		}
		return wrapper, nil
	}
}

func ref(kind, value string) types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: kind, Value: value}
}

func put(r *simulator.Registry, obj mo.Reference) *types.ManagedObjectReference {
	ref := r.Put(obj).Reference()
	return &ref
}

func invalid(property string) *soap.Fault {
	return simulator.Fault("invalid "+property, &types.InvalidArgument{InvalidProperty: property})
}

// -- HostServiceSystem: start policy and running state of SSH, the ESXi Shell, ntpd …

type ServiceSystem struct {
	mo.HostServiceSystem
	host *simulator.HostSystem
}

// Services as a municipality might find them: SSH and the ESXi Shell on and running, ntpd off.
var asFound = map[string]types.HostService{
	"TSM-SSH": {Policy: "on", Running: true},
	"TSM":     {Policy: "on", Running: true},
	"ntpd":    {Policy: "off", Running: false},
}

func newServiceSystem(h *simulator.HostSystem, id string) *ServiceSystem {
	s := &ServiceSystem{host: h}
	s.Self = ref("HostServiceSystem", "serviceSystem-"+id)
	if h.Config.Service != nil {
		s.ServiceInfo.Service = slices.Clone(h.Config.Service.Service)
	}
	for i := range s.ServiceInfo.Service {
		if f, ok := asFound[s.ServiceInfo.Service[i].Key]; ok {
			s.ServiceInfo.Service[i].Policy, s.ServiceInfo.Service[i].Running = f.Policy, f.Running
		}
	}
	s.mirror(nil)
	return s
}

// mirror copies the services into host.config.service, where vCenter also reports them.
func (s *ServiceSystem) mirror(ctx *simulator.Context) {
	info := &types.HostServiceInfo{Service: slices.Clone(s.ServiceInfo.Service)}
	if ctx == nil {
		s.host.Config.Service = info
		return
	}
	ctx.WithLock(s.host, func() { s.host.Config.Service = info })
}

func (s *ServiceSystem) change(ctx *simulator.Context, id string, f func(*types.HostService)) *soap.Fault {
	for i := range s.ServiceInfo.Service {
		if s.ServiceInfo.Service[i].Key == id {
			f(&s.ServiceInfo.Service[i])
			s.mirror(ctx)
			return nil
		}
	}
	return simulator.Fault("service "+id+" is not installed", &types.NotFound{})
}

func (s *ServiceSystem) UpdateServicePolicy(ctx *simulator.Context, req *types.UpdateServicePolicy) soap.HasFault {
	body := &methods.UpdateServicePolicyBody{}
	switch req.Policy {
	case "on", "off", "automatic":
		body.Fault_ = s.change(ctx, req.Id, func(svc *types.HostService) { svc.Policy = req.Policy })
	default:
		body.Fault_ = invalid("policy")
	}
	if body.Fault_ == nil {
		body.Res = &types.UpdateServicePolicyResponse{}
	}
	return body
}

func (s *ServiceSystem) StartService(ctx *simulator.Context, req *types.StartService) soap.HasFault {
	body := &methods.StartServiceBody{Fault_: s.change(ctx, req.Id, func(svc *types.HostService) { svc.Running = true })}
	if body.Fault_ == nil {
		body.Res = &types.StartServiceResponse{}
	}
	return body
}

func (s *ServiceSystem) StopService(ctx *simulator.Context, req *types.StopService) soap.HasFault {
	body := &methods.StopServiceBody{Fault_: s.change(ctx, req.Id, func(svc *types.HostService) { svc.Running = false })}
	if body.Fault_ == nil {
		body.Res = &types.StopServiceResponse{}
	}
	return body
}

func (s *ServiceSystem) RestartService(ctx *simulator.Context, req *types.RestartService) soap.HasFault {
	body := &methods.RestartServiceBody{Fault_: s.change(ctx, req.Id, func(svc *types.HostService) { svc.Running = true })}
	if body.Fault_ == nil {
		body.Res = &types.RestartServiceResponse{}
	}
	return body
}

func (s *ServiceSystem) RefreshServices(*types.RefreshServices) soap.HasFault {
	return &methods.RefreshServicesBody{Res: &types.RefreshServicesResponse{}}
}

// -- HostDateTimeSystem: time zone and NTP servers (none as found)

type DateTimeSystem struct {
	mo.HostDateTimeSystem
	host *simulator.HostSystem
}

func newDateTimeSystem(h *simulator.HostSystem, id string) *DateTimeSystem {
	d := &DateTimeSystem{host: h}
	d.Self = ref("HostDateTimeSystem", "dateTimeSystem-"+id)
	d.DateTimeInfo = types.HostDateTimeInfo{
		TimeZone:            types.HostDateTimeSystemTimeZone{Key: "UTC", Name: "UTC", Description: "UTC"},
		SystemClockProtocol: "ntp",
		NtpConfig:           &types.HostNtpConfig{},
	}
	info := d.DateTimeInfo
	h.Config.DateTimeInfo = &info
	return d
}

func (d *DateTimeSystem) UpdateDateTimeConfig(ctx *simulator.Context, req *types.UpdateDateTimeConfig) soap.HasFault {
	body := &methods.UpdateDateTimeConfigBody{}
	if ntp := req.Config.NtpConfig; ntp != nil {
		for _, server := range ntp.Server {
			if strings.TrimSpace(server) == "" || strings.ContainsAny(server, " \t/") {
				body.Fault_ = invalid("config.ntpConfig.server")
				return body
			}
		}
		d.DateTimeInfo.NtpConfig = &types.HostNtpConfig{Server: slices.Clone(ntp.Server)}
	}
	if req.Config.TimeZone != "" {
		d.DateTimeInfo.TimeZone.Key, d.DateTimeInfo.TimeZone.Name = req.Config.TimeZone, req.Config.TimeZone
	}
	info := d.DateTimeInfo
	ctx.WithLock(d.host, func() { d.host.Config.DateTimeInfo = &info })
	body.Res = &types.UpdateDateTimeConfigResponse{}
	return body
}

func (d *DateTimeSystem) QueryDateTime(*types.QueryDateTime) soap.HasFault {
	return &methods.QueryDateTimeBody{Res: &types.QueryDateTimeResponse{Returnval: time.Now().UTC()}}
}

func (d *DateTimeSystem) RefreshDateTimeSystem(*types.RefreshDateTimeSystem) soap.HasFault {
	return &methods.RefreshDateTimeSystemBody{Res: &types.RefreshDateTimeSystemResponse{}}
}

// -- HostAccessManager: lockdown mode and its exception users

type AccessManager struct {
	mo.HostAccessManager
	host        *simulator.HostSystem
	exceptions  []string
	systemUsers []string
}

func newAccessManager(h *simulator.HostSystem, id string) *AccessManager {
	a := &AccessManager{host: h}
	a.Self = ref("HostAccessManager", "hostAccessManager-"+id)
	a.LockdownMode = types.HostLockdownModeLockdownDisabled
	h.Config.LockdownMode = a.LockdownMode
	return a
}

func (a *AccessManager) ChangeLockdownMode(ctx *simulator.Context, req *types.ChangeLockdownMode) soap.HasFault {
	body := &methods.ChangeLockdownModeBody{}
	switch req.Mode {
	case types.HostLockdownModeLockdownDisabled, types.HostLockdownModeLockdownNormal, types.HostLockdownModeLockdownStrict:
	default:
		body.Fault_ = invalid("mode")
		return body
	}
	if req.Mode == a.LockdownMode {
		body.Fault_ = simulator.Fault("lockdown mode is already "+string(req.Mode), &types.NoPermission{})
		return body
	}
	a.LockdownMode = req.Mode
	ctx.WithLock(a.host, func() { a.host.Config.LockdownMode = req.Mode })
	body.Res = &types.ChangeLockdownModeResponse{}
	return body
}

func (a *AccessManager) QueryLockdownExceptions(*types.QueryLockdownExceptions) soap.HasFault {
	return &methods.QueryLockdownExceptionsBody{Res: &types.QueryLockdownExceptionsResponse{Returnval: slices.Clone(a.exceptions)}}
}

func (a *AccessManager) UpdateLockdownExceptions(req *types.UpdateLockdownExceptions) soap.HasFault {
	a.exceptions = slices.Clone(req.Users)
	return &methods.UpdateLockdownExceptionsBody{Res: &types.UpdateLockdownExceptionsResponse{}}
}

func (a *AccessManager) QuerySystemUsers(*types.QuerySystemUsers) soap.HasFault {
	return &methods.QuerySystemUsersBody{Res: &types.QuerySystemUsersResponse{Returnval: slices.Clone(a.systemUsers)}}
}

func (a *AccessManager) UpdateSystemUsers(req *types.UpdateSystemUsers) soap.HasFault {
	a.systemUsers = slices.Clone(req.Users)
	return &methods.UpdateSystemUsersBody{Res: &types.UpdateSystemUsersResponse{}}
}

// -- HostPatchManager: an offline bundle from a file:// depot stages its build; a reboot applies it

type PatchManager struct {
	mo.HostPatchManager
	lh *labHost
}

func patchFault(text string) *soap.Fault {
	return simulator.Fault(text, &types.PatchInstallFailed{PlatformConfigFault: types.PlatformConfigFault{Text: text}})
}

// stage checks one install request and returns the build its bundle brings; a request the
// host cannot take is refused at once (vcsim would word a failed task's message as a Go type).
func (p *PatchManager) stage(req *types.InstallHostPatchV2_Task) (build, string, *soap.Fault) {
	h := p.lh.host
	if len(req.MetaUrls) > 0 || len(req.VibUrls) > 0 || len(req.BundleUrls) != 1 {
		return build{}, "", patchFault("give exactly one offline bundle in bundleUrls")
	}
	if !h.Runtime.InMaintenanceMode {
		return build{}, "", patchFault(h.Name + " is not in maintenance mode")
	}
	u, err := url.Parse(req.BundleUrls[0])
	if err != nil || u.Scheme != "file" {
		return build{}, "", patchFault("the lab's depot serves file:// URLs only: " + req.BundleUrls[0])
	}
	name := u.Path[strings.LastIndex(u.Path, "/")+1:]
	b, ok := bundleBuild(name)
	if !ok {
		return build{}, "", patchFault("not an ESXi offline bundle name (VMware-ESXi-<version>-<build>-depot.zip): " + name)
	}
	if _, err := os.Stat(u.Path); err != nil {
		return build{}, "", patchFault("the offline bundle is not in the depot: " + u.Path)
	}
	if running := h.Config.Product.Version; family(b.Version) != family(running) {
		return build{}, "", patchFault(fmt.Sprintf("%s is ESXi %s; %s runs %s (an upgrade, not a patch)",
			name, b.Version, h.Name, running))
	}
	return b, name, nil
}

func (p *PatchManager) InstallHostPatchV2Task(ctx *simulator.Context, req *types.InstallHostPatchV2_Task) soap.HasFault {
	h := p.lh.host
	var (
		b     build
		name  string
		fault *soap.Fault
	)
	ctx.WithLock(h, func() { b, name, fault = p.stage(req) })
	if fault != nil {
		return &methods.InstallHostPatchV2_TaskBody{Fault_: fault}
	}
	task := simulator.CreateTask(h, "installHostPatchV2", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		status := types.HostPatchManagerStatus{Id: name, Applicable: true}
		have, _ := strconv.Atoi(h.Config.Product.Build)
		want, _ := strconv.Atoi(b.Build)
		if want <= have {
			status.Applicable, status.Reason = false, []string{"obsoleted"}
		} else {
			p.lh.pending = &b
			h.Summary.RebootRequired = true
			status.Installed, status.RestartRequired = true, true
		}
		return &types.HostPatchManagerResult{Version: "1.0", Status: []types.HostPatchManagerStatus{status}}, nil
	})
	return &methods.InstallHostPatchV2_TaskBody{Res: &types.InstallHostPatchV2_TaskResponse{Returnval: task.Run(ctx)}}
}

// -- RebootHost_Task: applies a staged build

// labHostSystem is a host as one session's calls see it: vcsim's HostSystem (its methods, and its
// properties through Get) plus RebootHost_Task.
type labHostSystem struct {
	*simulator.HostSystem
	lh *labHost
}

// Get gives the property collector the host itself.
func (s *labHostSystem) Get() mo.Reference { return s.HostSystem }

func (s *labHostSystem) RebootHostTask(ctx *simulator.Context, req *types.RebootHost_Task) soap.HasFault {
	h := s.HostSystem
	var inMaintenance bool
	ctx.WithLock(h, func() { inMaintenance = h.Runtime.InMaintenanceMode })
	if !inMaintenance && !req.Force {
		return &methods.RebootHost_TaskBody{Fault_: simulator.Fault(
			h.Name+" is not in maintenance mode (reboot with force to override)", &types.InvalidState{})}
	}
	task := simulator.CreateTask(h, "rebootHost", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		if s.lh.pending != nil {
			setProduct(h, *s.lh.pending)
			s.lh.pending = nil
		}
		h.Summary.RebootRequired = false
		now := time.Now()
		h.Runtime.BootTime = &now
		return nil, nil
	})
	return &methods.RebootHost_TaskBody{Res: &types.RebootHost_TaskResponse{Returnval: task.Run(ctx)}}
}
