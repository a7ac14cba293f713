package main

// Tensors on the wire (docs/wire.md, "Tensors"): a TensorHeader, then TensorChunks holding
// the little-endian, C-contiguous bytes in order. Reads reassemble the chunks of each
// header; writes cut the bytes into chunks of at most 1 MiB.

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"

	paramdv1 "paramd/v1"
)

const chunkBytes = 1 << 20

// Tensor is one tensor read from a stream: its header and all of its bytes.
type Tensor struct {
	Header *paramdv1.TensorHeader
	Data   []byte
}

func elementSize(dtype paramdv1.DType) (int64, error) {
	switch dtype {
	case paramdv1.DType_FLOAT64, paramdv1.DType_INT64:
		return 8, nil
	case paramdv1.DType_FLOAT32, paramdv1.DType_INT32:
		return 4, nil
	case paramdv1.DType_FLOAT16, paramdv1.DType_BFLOAT16, paramdv1.DType_INT16:
		return 2, nil
	case paramdv1.DType_INT8, paramdv1.DType_UINT8, paramdv1.DType_BOOL:
		return 1, nil
	}
	return 0, fmt.Errorf("unknown dtype %v", dtype)
}

func byteSize(meta *paramdv1.TensorMeta) (int64, error) {
	size, err := elementSize(meta.GetDtype())
	if err != nil {
		return 0, err
	}
	for _, d := range meta.GetShape() {
		size *= d
	}
	return size, nil
}

// frameSource is what the read streams (StateDict, GetTensor, ...) have in common.
type frameSource interface {
	Recv() (*paramdv1.TensorFrame, error)
}

// readTensors drains a read stream: the start frame, then per tensor a header and its
// chunks, each chunk at the offset where the previous one ended and the tensor complete
// before the next header.
func readTensors(stream frameSource) (*paramdv1.StreamStart, []Tensor, error) {
	var start *paramdv1.StreamStart
	var tensors []Tensor
	complete := func() error {
		if len(tensors) == 0 {
			return nil
		}
		last := tensors[len(tensors)-1]
		want, err := byteSize(last.Header.GetMeta())
		if err != nil {
			return err
		}
		if int64(len(last.Data)) != want {
			return fmt.Errorf("%s: %d bytes arrived, %d expected", last.Header.GetName(),
				len(last.Data), want)
		}
		return nil
	}
	for {
		frame, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		switch f := frame.GetFrame().(type) {
		case *paramdv1.TensorFrame_Start:
			if start != nil {
				return nil, nil, fmt.Errorf("a second start frame")
			}
			start = f.Start
		case *paramdv1.TensorFrame_Header:
			if err := complete(); err != nil {
				return nil, nil, err
			}
			tensors = append(tensors, Tensor{Header: f.Header})
		case *paramdv1.TensorFrame_Chunk:
			if len(tensors) == 0 {
				return nil, nil, fmt.Errorf("a chunk before any header")
			}
			t := &tensors[len(tensors)-1]
			if f.Chunk.GetOffset() != uint64(len(t.Data)) {
				return nil, nil, fmt.Errorf("%s: chunk at offset %d, expected %d",
					t.Header.GetName(), f.Chunk.GetOffset(), len(t.Data))
			}
			t.Data = append(t.Data, f.Chunk.GetData()...)
		}
	}
	if start == nil {
		return nil, nil, fmt.Errorf("the stream had no start frame")
	}
	return start, tensors, complete()
}

// frameSink is what the write streams (SetTensor, LoadStateDict, ...) have in common.
type frameSink interface {
	Send(*paramdv1.WriteFrame) error
}

// sendTensor sends a header and its bytes in chunks.
func sendTensor(stream frameSink, header *paramdv1.TensorHeader, data []byte) error {
	if err := stream.Send(&paramdv1.WriteFrame{
		Frame: &paramdv1.WriteFrame_Header{Header: header}}); err != nil {
		return err
	}
	for offset := 0; offset < len(data); offset += chunkBytes {
		end := offset + chunkBytes
		if end > len(data) {
			end = len(data)
		}
		chunk := &paramdv1.TensorChunk{Offset: uint64(offset), Data: data[offset:end]}
		if err := stream.Send(&paramdv1.WriteFrame{
			Frame: &paramdv1.WriteFrame_Chunk{Chunk: chunk}}); err != nil {
			return err
		}
	}
	return nil
}

func float32s(data []byte) []float32 {
	values := make([]float32, len(data)/4)
	for i := range values {
		values[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return values
}

func float32Bytes(values []float32) []byte {
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return data
}

// torchSize spells a shape as PyTorch does (torch.Size([8, 4])).
func torchSize(shape []int64) string {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = fmt.Sprint(d)
	}
	return "torch.Size([" + strings.Join(dims, ", ") + "])"
}

// dtypeName spells a dtype as PyTorch does (torch.float32).
func dtypeName(dtype paramdv1.DType) string {
	return "torch." + strings.ToLower(dtype.String())
}
