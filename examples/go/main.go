// A paramd client in Go, from the protos alone (docs/wire.md, "Clients in other
// languages"). Against a running daemon it creates the tied model of
// examples/specs/tied_sequential.json (net[2] and net[4] are one Linear), reads its
// state_dict through the StateDict stream, writes a region of 2.weight and reads it back
// through 4.weight, and shows load_state_dict's strict error. It exits non-zero when the
// daemon's answers differ from PyTorch's.
//
//	paramd-go-client [-spec FILE] [-model NAME] HOST:PORT
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	paramdv1 "paramd/v1"
)

// What PyTorch gives for the spec: model.state_dict() keys and shapes in its order, 2.weight
// and 4.weight being one Parameter.
var wantKeys = []string{"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias",
	"6.weight", "6.bias"}
var wantShapes = [][]int64{{8, 4}, {8}, {8, 8}, {8}, {8, 8}, {8}, {1, 8}, {1}}

type session struct {
	ctx    context.Context
	model  string
	models paramdv1.ModelsClient
	params paramdv1.ParametersClient
}

func main() {
	spec := flag.String("spec", "examples/specs/tied_sequential.json", "the model spec (JSON)")
	model := flag.String("model", "go-tied", "the model's name on the daemon")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: paramd-go-client [-spec FILE] [-model NAME] HOST:PORT")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *spec, *model); err != nil {
		fmt.Fprintln(os.Stderr, "paramd-go-client:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
}

func run(address, specPath, model string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", address, err)
	}
	defer conn.Close()

	health, err := grpc_health_v1.NewHealthClient(conn).Check(ctx,
		&grpc_health_v1.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("Health.Check: %w", err)
	}
	fmt.Println("health:", health.GetStatus())
	if health.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		return fmt.Errorf("the daemon is not serving")
	}

	spec, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	s := &session{ctx: ctx, model: model, models: paramdv1.NewModelsClient(conn),
		params: paramdv1.NewParametersClient(conn)}
	info, err := s.models.CreateModel(ctx, &paramdv1.CreateModelRequest{
		Name: model, SpecJson: string(spec), Seed: 1})
	if err != nil {
		return fmt.Errorf("CreateModel: %w", err)
	}
	fmt.Printf("created %q at version %d:\n%s\n", info.GetName(), info.GetVersion(), info.GetRepr())

	state, err := s.stateDict()
	if err != nil {
		return err
	}
	if err := s.writeRegionReadTied(state); err != nil {
		return err
	}
	return s.strictLoadError(state)
}

// stateDict reads model.state_dict() and checks PyTorch's keys, shapes and tie.
func (s *session) stateDict() ([]Tensor, error) {
	stream, err := s.params.StateDict(s.ctx, &paramdv1.StateDictRequest{Model: s.model})
	if err != nil {
		return nil, err
	}
	start, tensors, err := readTensors(stream)
	if err != nil {
		return nil, fmt.Errorf("StateDict: %w", err)
	}
	fmt.Printf("state_dict at version %d:\n", start.GetVersion())
	var keys []string
	var shapes [][]int64
	for _, t := range tensors {
		meta := t.Header.GetMeta()
		tied := ""
		if len(t.Header.GetTiedWith()) > 0 {
			tied = "  tied with " + strings.Join(t.Header.GetTiedWith(), ", ")
		}
		fmt.Printf("  %-9s %-18s %s%s\n", t.Header.GetName(), torchSize(meta.GetShape()),
			dtypeName(meta.GetDtype()), tied)
		keys = append(keys, t.Header.GetName())
		shapes = append(shapes, meta.GetShape())
	}
	if !reflect.DeepEqual(keys, wantKeys) || !reflect.DeepEqual(shapes, wantShapes) {
		return nil, fmt.Errorf("state_dict keys %v shapes %v; PyTorch has %v %v", keys, shapes,
			wantKeys, wantShapes)
	}
	if !reflect.DeepEqual(tensors[2].Header.GetTiedWith(), []string{"4.weight"}) ||
		!bytes.Equal(tensors[2].Data, tensors[4].Data) {
		return nil, fmt.Errorf("2.weight and 4.weight are not one parameter")
	}
	return tensors, nil
}

// writeRegionReadTied writes net[2].weight[1:3, 2:5] and reads rows 1:3 back through
// net[4].weight, the same Parameter.
func (s *session) writeRegionReadTied(state []Tensor) error {
	written := []float32{1, 2, 3, 4, 5, 6}
	header := &paramdv1.TensorHeader{
		Name: "2.weight",
		Meta: &paramdv1.TensorMeta{Dtype: paramdv1.DType_FLOAT32, Shape: []int64{2, 3}},
		Region: &paramdv1.Region{Ranges: []*paramdv1.Range{{Start: 1, Stop: 3},
			{Start: 2, Stop: 5}}},
	}
	stream, err := s.params.SetTensor(s.ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&paramdv1.WriteFrame{Frame: &paramdv1.WriteFrame_Options{
		Options: &paramdv1.WriteOptions{Model: s.model}}}); err != nil {
		return err
	}
	if err := sendTensor(stream, header, float32Bytes(written)); err != nil {
		return err
	}
	reply, err := stream.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("SetTensor 2.weight[1:3, 2:5]: %w", err)
	}
	fmt.Printf("2.weight[1:3, 2:5] = %v -> version %d\n", written, reply.GetVersion())

	read, err := s.params.GetTensor(s.ctx, &paramdv1.GetTensorRequest{Model: s.model,
		Name: "4.weight", Region: &paramdv1.Region{Ranges: []*paramdv1.Range{{Start: 1, Stop: 3}}}})
	if err != nil {
		return err
	}
	start, tensors, err := readTensors(read)
	if err != nil {
		return fmt.Errorf("GetTensor 4.weight[1:3]: %w", err)
	}
	if len(tensors) != 1 || !reflect.DeepEqual(tensors[0].Header.GetMeta().GetShape(), []int64{2, 8}) {
		return fmt.Errorf("GetTensor 4.weight[1:3]: want one [2, 8] tensor")
	}
	got := float32s(tensors[0].Data)
	fmt.Printf("4.weight[1:3] at version %d = %v\n", start.GetVersion(), got)
	before := float32s(state[4].Data)
	for row := 0; row < 2; row++ {
		for col := 0; col < 8; col++ {
			want := before[(row+1)*8+col]
			if col >= 2 && col < 5 {
				want = written[row*3+col-2]
			}
			if got[row*8+col] != want {
				return fmt.Errorf("4.weight[%d, %d] = %v, want %v", row+1, col, got[row*8+col], want)
			}
		}
	}
	if start.GetVersion() != reply.GetVersion() {
		return fmt.Errorf("read version %d, wrote %d", start.GetVersion(), reply.GetVersion())
	}
	return nil
}

// strictLoadError loads the state_dict without 6.bias: load_state_dict(strict=True) refuses
// it with PyTorch's text and INVALID_ARGUMENT, and the model stays as it was.
func (s *session) strictLoadError(state []Tensor) error {
	before, err := s.models.DescribeModel(s.ctx, &paramdv1.DescribeModelRequest{Name: s.model})
	if err != nil {
		return err
	}
	stream, err := s.params.LoadStateDict(s.ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&paramdv1.WriteFrame{Frame: &paramdv1.WriteFrame_Options{
		Options: &paramdv1.WriteOptions{Model: s.model}}}); err != nil {
		return err
	}
	for _, t := range state {
		if t.Header.GetName() == "6.bias" {
			continue
		}
		header := &paramdv1.TensorHeader{Name: t.Header.GetName(), Meta: &paramdv1.TensorMeta{
			Dtype: t.Header.GetMeta().GetDtype(), Shape: t.Header.GetMeta().GetShape()}}
		if err := sendTensor(stream, header, t.Data); err != nil {
			return err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	// The answer is a stream (docs/wire.md, "Pages and streamed lists"): a refused load
	// sends its whole error text in pieces, then ends with the status.
	var text strings.Builder
	for {
		message, recvErr := stream.Recv()
		if recvErr != nil {
			err = recvErr
			break
		}
		text.WriteString(message.GetErrorText())
	}
	st := status.Convert(err)
	if text.Len() > 0 && !strings.HasPrefix(text.String(), "Error(s) in loading state_dict") {
		return fmt.Errorf("the streamed error text is not PyTorch's: %q", text.String())
	}
	fmt.Printf("load_state_dict without 6.bias: %v: %s\n", st.Code(), st.Message())
	if st.Code() != codes.InvalidArgument ||
		!strings.Contains(st.Message(), `Missing key(s) in state_dict: "6.bias".`) {
		return fmt.Errorf("want INVALID_ARGUMENT naming the missing key 6.bias")
	}
	after, err := s.models.DescribeModel(s.ctx, &paramdv1.DescribeModelRequest{Name: s.model})
	if err != nil {
		return err
	}
	if after.GetVersion() != before.GetVersion() {
		return fmt.Errorf("the failed load moved the model from version %d to %d",
			before.GetVersion(), after.GetVersion())
	}
	return nil
}
