package dev.deepserve.model.weights;

/** A checkpoint file that is not valid safetensors, or lacks a tensor the model needs; the message names the file or tensor. */
public final class SafetensorsFormatException extends RuntimeException {
    public SafetensorsFormatException(String message) {
        super(message);
    }
}
